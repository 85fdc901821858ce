//! The SFU core with simulated peers on a virtual clock: every participant is a real str0m `Rtc`
//! acting as the browser (ICE, DTLS, SRTP, SCTP all run), joined through LiveKit signal messages,
//! with datagrams carried between them and the SFU in memory. No sockets, no threads, no sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

use super::room::PubTrack;
use super::*;

const SFU_ADDR: &str = "10.0.0.100:7882";

/// One simulated browser PeerConnection.
struct Pc {
    rtc: Rtc,
    addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    channel: Option<ChannelId>,
    /// What arrived: media per mid (payloads), data channel messages.
    media: HashMap<Mid, Vec<Vec<u8>>>,
    data: Vec<Vec<u8>>,
    /// Keyframe requests (PLI/FIR) the SFU sent to this publisher.
    keyframe_requests: usize,
    connected: bool,
    /// Cut off from the network: nothing reaches it, it sends nothing, its timers stand.
    offline: bool,
}

impl Pc {
    fn new(now: Instant, addr: &str) -> Pc {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Pc {
            rtc,
            addr,
            pending: None,
            channel: None,
            media: HashMap::new(),
            data: vec![],
            keyframe_requests: 0,
            connected: false,
            offline: false,
        }
    }
}

/// A participant: signalling inbox plus one (v1) or two (v0) PeerConnections.
struct Peer {
    pid: Pid,
    sid: String,
    inbox: Vec<Resp>,
    publisher: Pc,
    subscriber: Option<Pc>,
    offer_id: u32,
    closed: Option<lk::DisconnectReason>,
    /// A broken client never answers the server's offers.
    silent: bool,
}

impl Peer {
    fn subscriber_pc(&mut self) -> &mut Pc {
        match &mut self.subscriber {
            Some(s) => s,
            None => &mut self.publisher,
        }
    }

    fn take<T>(&mut self, f: impl Fn(&Resp) -> Option<T>) -> Vec<T> {
        let mut out = vec![];
        self.inbox.retain(|m| match f(m) {
            Some(t) => {
                out.push(t);
                false
            }
            None => true,
        });
        out
    }
}

struct World {
    now: Instant,
    sfu: Sfu,
    peers: Vec<Peer>,
    next_port: u16,
    /// Forwarded packets the SFU measured (`delay.rs`), as they left.
    probes: Vec<delay::Probe>,
    /// The events the SFU emitted (`events.rs`), in order.
    events: Vec<crate::events::Event>,
    /// What the SFU handed the record service.
    recorded: Vec<crate::sfu::RecMsg>,
}

impl World {
    fn new() -> World {
        World::with_config(SfuConfig::default())
    }

    fn with_config(mut cfg: SfuConfig) -> World {
        cfg.candidates = vec![(SFU_ADDR.parse().unwrap(), Protocol::Udp)];
        let now = Instant::now();
        World {
            now,
            sfu: Sfu::new(cfg, now),
            peers: vec![],
            next_port: 5000,
            probes: vec![],
            events: vec![],
            recorded: vec![],
        }
    }

    fn params(room: &str, identity: &str, mode: Mode) -> JoinParams {
        JoinParams::for_test(room, identity, mode, 0)
    }

    fn addr(&mut self) -> String {
        self.next_port += 1;
        format!("10.0.0.1:{}", self.next_port)
    }

    /// Joins and returns the index of the participant; its join response is checked.
    fn join(&mut self, room: &str, identity: &str, mode: Mode) -> usize {
        let (pid, sid) = self
            .sfu
            .join(self.now, 0, World::params(room, identity, mode))
            .unwrap();
        let publisher = Pc::new(self.now, &self.addr());
        let subscriber = (mode == Mode::V0).then(|| Pc::new(self.now, &self.addr()));
        self.peers.push(Peer {
            pid,
            sid,
            inbox: vec![],
            publisher,
            subscriber,
            offer_id: 0,
            closed: None,
            silent: false,
        });
        let i = self.peers.len() - 1;
        self.pump();
        let joins = self.peers[i].take(|m| match m {
            Resp::Join(j) => Some(j.clone()),
            _ => None,
        });
        assert_eq!(joins.len(), 1, "one join response");
        let j = &joins[0];
        assert_eq!(j.participant.as_ref().unwrap().identity, identity);
        assert!(!j.server_info.as_ref().unwrap().version.is_empty());
        assert_eq!(j.subscriber_primary, mode == Mode::V0);
        if mode == Mode::V1 {
            // The browser opens its data channels in its first offer.
            self.offer(i, |api| {
                api.add_channel("_reliable".into());
            });
        }
        i
    }

    /// Delivers signal responses and answers server offers (v0 subscriber PC).
    fn pump(&mut self) {
        while let Some(out) = self.sfu.poll_output() {
            match out {
                Output::Transmit(t) => {
                    if self.sfu.probing() {
                        self.probes.extend(self.sfu.probe_sent(&t.contents));
                    }
                    let to = self
                        .peers
                        .iter_mut()
                        .flat_map(|p| {
                            std::iter::once(&mut p.publisher).chain(p.subscriber.as_mut())
                        })
                        .find(|pc| pc.addr == t.destination && !pc.offline);
                    if let Some(pc) = to {
                        let r =
                            Receive::new(t.proto, t.source, t.destination, &t.contents).unwrap();
                        pc.rtc.handle_input(Input::Receive(self.now, r)).unwrap();
                    }
                }
                Output::Signal(pid, msg) => {
                    let i = self.peers.iter().position(|p| p.pid == pid).unwrap();
                    if let (Resp::Offer(sd), false) = (&*msg, self.peers[i].silent) {
                        // v0: the server offers the subscriber PC; the browser answers.
                        let sub = self.peers[i]
                            .subscriber
                            .as_mut()
                            .expect("offers only in v0");
                        let offer = SdpOffer::from_sdp_string(&sd.sdp).unwrap();
                        let answer = sub.rtc.sdp_api().accept_offer(offer).unwrap();
                        let id = sd.id;
                        self.sfu.handle_signal(
                            self.now,
                            pid,
                            Req::Answer(lk::SessionDescription {
                                r#type: "answer".into(),
                                sdp: answer.to_sdp_string(),
                                id,
                                mid_to_track_id: HashMap::new(),
                            }),
                        );
                    }
                    if let Resp::MediaSectionsRequirement(r) = &*msg {
                        // v1: the browser adds receive-only sections and offers again.
                        let (a, v) = (r.num_audios, r.num_videos);
                        self.offer(i, |api| {
                            for _ in 0..a {
                                api.add_media(
                                    MediaKind::Audio,
                                    Direction::RecvOnly,
                                    None,
                                    None,
                                    None,
                                );
                            }
                            for _ in 0..v {
                                api.add_media(
                                    MediaKind::Video,
                                    Direction::RecvOnly,
                                    None,
                                    None,
                                    None,
                                );
                            }
                        });
                    }
                    if let Resp::Answer(sd) = &*msg {
                        assert_eq!(
                            sd.id, self.peers[i].offer_id,
                            "answer id echoes the offer id"
                        );
                        let pc = &mut self.peers[i].publisher;
                        let answer = SdpAnswer::from_sdp_string(&sd.sdp).unwrap();
                        let pending = pc.pending.take().expect("an offer is out");
                        pc.rtc.sdp_api().accept_answer(pending, answer).unwrap();
                    }
                    self.peers[i].inbox.push(*msg);
                }
                Output::Close(pid, reason) => {
                    if let Some(p) = self.peers.iter_mut().find(|p| p.pid == pid) {
                        p.closed = Some(reason);
                    }
                }
                Output::Event(e) => self.events.push(*e),
                Output::Record(m) => self.recorded.push(*m),
            }
        }
    }

    /// The browser's publisher PC makes changes and offers them (always: an empty change
    /// set still renegotiates, as a browser's negotiate() does).
    fn offer(&mut self, i: usize, change: impl FnOnce(&mut str0m::change::SdpApi)) {
        let pc = &mut self.peers[i].publisher;
        let mut api = pc.rtc.sdp_api();
        change(&mut api);
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        pc.pending = Some(pending);
        self.peers[i].offer_id += 1;
        let (pid, id) = (self.peers[i].pid, self.peers[i].offer_id);
        self.sfu.handle_signal(
            self.now,
            pid,
            Req::Offer(lk::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id,
                mid_to_track_id: HashMap::new(),
            }),
        );
        self.pump();
    }

    /// Publishes a track: add_track → track_published, then a new send-only section offered.
    fn publish(&mut self, i: usize, kind: MediaKind) -> (String, Mid) {
        let cid = format!("cid-{}-{kind}", self.peers[i].sid);
        let pid = self.peers[i].pid;
        let ty = if kind == MediaKind::Audio {
            lk::TrackType::Audio
        } else {
            lk::TrackType::Video
        };
        self.sfu.handle_signal(
            self.now,
            pid,
            Req::AddTrack(lk::AddTrackRequest {
                cid: cid.clone(),
                r#type: ty as i32,
                name: format!("{kind}"),
                ..Default::default()
            }),
        );
        self.pump();
        let published = self.peers[i].take(|m| match m {
            Resp::TrackPublished(t) => Some(t.clone()),
            _ => None,
        });
        assert_eq!(published.len(), 1);
        assert_eq!(
            published[0].cid, cid,
            "track_published names the request's cid"
        );
        let sid = published[0].track.as_ref().unwrap().sid.clone();
        assert!(sid.starts_with("TR_"));
        let mut mid = None;
        let needs_channel = self.peers[i].publisher.channel.is_none();
        self.offer(i, |api| {
            mid = Some(api.add_media(
                kind,
                Direction::SendOnly,
                Some("stream".into()),
                Some(cid),
                None,
            ));
            if needs_channel {
                api.add_channel("_reliable".into());
            }
        });
        (sid, mid.unwrap())
    }

    /// Runs the network for `d` of virtual time in 1 ms steps.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(1);
            let now = self.now;
            for p in &mut self.peers {
                for pc in std::iter::once(&mut p.publisher).chain(p.subscriber.as_mut()) {
                    if pc.offline {
                        continue;
                    }
                    pc.rtc.handle_input(Input::Timeout(now)).unwrap();
                    loop {
                        match pc.rtc.poll_output().unwrap() {
                            RtcOutput::Timeout(_) => break,
                            RtcOutput::Transmit(t) => {
                                self.sfu.set_arrival(now);
                                self.sfu
                                    .receive(now, t.proto, t.source, t.destination, &t.contents)
                            }
                            RtcOutput::Event(Event::Connected) => pc.connected = true,
                            RtcOutput::Event(Event::ChannelOpen(id, _)) => {
                                pc.channel.get_or_insert(id);
                            }
                            RtcOutput::Event(Event::MediaData(d)) => {
                                pc.media.entry(d.mid).or_default().push(d.data.to_vec())
                            }
                            RtcOutput::Event(Event::ChannelData(d)) => pc.data.push(d.data),
                            RtcOutput::Event(Event::KeyframeRequest(_)) => {
                                pc.keyframe_requests += 1
                            }
                            RtcOutput::Event(_) => {}
                        }
                    }
                }
            }
            if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
                self.sfu.handle_timeout(now);
            }
            self.pump();
        }
    }

    /// Writes one frame on a published section (VP8: first byte 0 = keyframe, 1 = delta).
    fn send(&mut self, i: usize, mid: Mid, frame: &[u8], ts: u64) {
        self.send_with_level(i, mid, None, frame, ts)
    }

    /// Writes one frame, with an RFC 6464 audio level if given.
    fn send_with_level(&mut self, i: usize, mid: Mid, level: Option<i8>, frame: &[u8], ts: u64) {
        let now = self.now;
        let pc = &mut self.peers[i].publisher;
        let (pt, codec) = {
            let w = pc.rtc.writer(mid).expect("a send section");
            let codec = if w.payload_params().any(|p| p.spec().codec == Codec::Vp8) {
                Codec::Vp8
            } else {
                Codec::Opus
            };
            let pt = w
                .payload_params()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
                .unwrap();
            (pt, codec)
        };
        let freq = if codec == Codec::Vp8 { 90_000 } else { 48_000 };
        let mut w = pc.rtc.writer(mid).unwrap();
        if let Some(level) = level {
            w = w.audio_level(level, true);
        }
        let time = MediaTime::new(ts, str0m::media::Frequency::new(freq).unwrap());
        w.write(pt, now, time, frame.to_vec()).unwrap();
    }

    /// The sections of `i`'s receiving PC that got media, with the payloads.
    fn received(&mut self, i: usize) -> Vec<Vec<u8>> {
        let pc = self.peers[i].subscriber_pc();
        pc.media.values().flatten().cloned().collect()
    }
}

fn updates_of(p: &mut Peer) -> Vec<lk::ParticipantInfo> {
    p.take(|m| match m {
        Resp::Update(u) => Some(u.participants.clone()),
        _ => None,
    })
    .into_iter()
    .flatten()
    .collect()
}

fn two_in_a_room(mode: Mode) -> World {
    let mut w = World::new();
    let a = w.join("standup", "alice", mode);
    w.run(Duration::from_millis(300));
    let b = w.join("standup", "bob", mode);
    w.run(Duration::from_millis(300));
    assert!(w.peers[a].subscriber_pc().connected, "alice's PC connects");
    assert!(w.peers[b].subscriber_pc().connected, "bob's PC connects");
    w
}

fn audio_flows(mode: Mode) {
    let mut w = two_in_a_room(mode);
    let (track, mid) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(300));
    // bob hears about alice's track before its media arrives.
    let seen = updates_of(&mut w.peers[1]);
    assert!(
        seen.iter()
            .any(|p| p.identity == "alice" && p.tracks.iter().any(|t| t.sid == track)),
        "bob is told about alice's track: {seen:?}"
    );
    for n in 0..50u64 {
        w.send(0, mid, &[0xAB, n as u8, 3, 4, 5], n * 960);
        w.run(Duration::from_millis(20));
    }
    let got = w.received(1);
    assert!(
        got.len() >= 40,
        "bob receives alice's audio frames (got {})",
        got.len()
    );
    assert!(
        got.iter().any(|f| f == &[0xAB, 49, 3, 4, 5]),
        "payloads arrive intact"
    );
    assert!(w.received(0).is_empty(), "nobody receives their own audio");
}

#[test]
fn v0_audio_flows_from_publisher_to_subscriber() {
    audio_flows(Mode::V0);
}

#[test]
fn v1_audio_flows_on_the_single_peer_connection() {
    audio_flows(Mode::V1);
}

#[test]
fn v1_answer_names_the_forwarded_stream_in_its_section() {
    let mut w = two_in_a_room(Mode::V1);
    let (track, _) = w.publish(0, MediaKind::Video);
    w.run(Duration::from_millis(300));
    let alice_sid = w.peers[0].sid.clone();
    let answers = w.peers[1].take(|m| match m {
        Resp::Answer(sd) => Some(sd.clone()),
        _ => None,
    });
    let last = answers.last().expect("bob got answers");
    let (mid, t) = last
        .mid_to_track_id
        .iter()
        .next()
        .expect("the answer maps a section to alice's track");
    assert_eq!(t, &track);
    let want = format!("a=msid:{alice_sid}|{track} {track}");
    let section = last
        .sdp
        .split("m=")
        .find(|s| s.contains(&format!("a=mid:{mid}\r\n")))
        .unwrap();
    assert!(
        section.contains(&want),
        "section {mid} carries {want}:\n{section}"
    );
    assert!(section.contains("a=sendonly"), "{section}");
}

#[test]
fn a_late_subscriber_waits_for_a_keyframe_and_asks_for_one() {
    let mut w = World::new();
    let a = w.join("r", "alice", Mode::V0);
    w.run(Duration::from_millis(300));
    let (_, mid) = w.publish(a, MediaKind::Video);
    w.run(Duration::from_millis(300));
    // alice sends a keyframe, then only delta frames.
    w.send(a, mid, &[0x00, 1, 2, 3], 0);
    w.run(Duration::from_millis(33));
    let b = w.join("r", "bob", Mode::V0);
    let before = w.peers[a].publisher.keyframe_requests;
    for n in 1..40u64 {
        w.send(a, mid, &[0x01, n as u8, 2, 3], n * 3000);
        w.run(Duration::from_millis(33));
    }
    // str0m surfaces the SFU's PLI at alice as a keyframe request; throttled, not one per frame.
    let plis = w.peers[a].publisher.keyframe_requests - before;
    let early: Vec<u8> = w.received(b).iter().map(|f| f[0]).collect();
    assert!(
        early.is_empty(),
        "delta frames are held back until a keyframe: {early:?}"
    );
    assert!(
        (1..=5).contains(&plis),
        "the SFU asked alice for a keyframe, throttled ({plis} requests in 1.3 s)"
    );
    w.send(a, mid, &[0x00, 9, 9, 9], 40 * 3000);
    for n in 41..45u64 {
        w.run(Duration::from_millis(33));
        w.send(a, mid, &[0x01, n as u8, 2, 3], n * 3000);
    }
    w.run(Duration::from_millis(100));
    let got = w.received(b);
    assert!(!got.is_empty(), "bob gets video from the keyframe on");
    assert_eq!(got[0][0] & 1, 0, "the first frame bob gets is a keyframe");
}

#[test]
fn a_forwarded_keyframe_leaves_in_the_turn_it_arrived() {
    let mut w = two_in_a_room(Mode::V0);
    let (_, mid) = w.publish(0, MediaKind::Video);
    w.run(Duration::from_millis(300));
    w.send(0, mid, &[0x00, 1, 2, 3], 0);
    w.run(Duration::from_millis(300));
    assert!(!w.received(1).is_empty(), "bob's video is running");

    // A 10 KB keyframe: about ten datagrams from alice at one instant (within what str0m's
    // pacer lets go at once at the starting bandwidth estimate).
    w.now += Duration::from_millis(1);
    let now = w.now;
    let mut frame = vec![0u8; 10_000];
    frame[1] = 7;
    w.send(0, mid, &frame, 3000);
    let alice = &mut w.peers[0].publisher;
    alice.rtc.handle_input(Input::Timeout(now)).unwrap();
    let mut sent = vec![];
    while let RtcOutput::Transmit(t) = alice.rtc.poll_output().unwrap() {
        sent.push(t);
    }
    let media = sent.iter().filter(|t| t.contents.len() > 500).count();
    assert!(media >= 8, "the keyframe is {media} datagrams");
    for t in &sent {
        w.sfu
            .receive(now, t.proto, t.source, t.destination, &t.contents);
    }
    // What the SFU sends at that same instant, with no `handle_timeout` in between (str0m's
    // pacer wants a timer after every packet it releases: the SFU handles those itself).
    let bob = w.peers[1].subscriber_pc().addr;
    let mut forwarded = 0;
    while let Some(out) = w.sfu.poll_output() {
        if let Output::Transmit(t) = out {
            if t.destination == bob && t.contents.len() > 500 {
                forwarded += 1;
            }
        }
    }
    assert!(
        forwarded >= media,
        "all of the keyframe's {media} packets leave for bob at once ({forwarded} did)"
    );
}

#[test]
fn nothing_is_queued_for_a_subscriber_before_its_connection_is_up() {
    let mut w = World::new();
    let a = w.join("r", "alice", Mode::V0);
    w.run(Duration::from_millis(300));
    let (_, mid) = w.publish(a, MediaKind::Audio);
    w.run(Duration::from_millis(300));
    // bob's subscription is negotiated, but his packets are lost until he is back online.
    let b = w.join("r", "bob", Mode::V0);
    w.peers[b].subscriber_pc().offline = true;
    w.run(Duration::from_millis(100));
    for n in 0..10u64 {
        w.send(a, mid, &[0xA0, n as u8], n * 960);
        w.run(Duration::from_millis(20));
    }
    w.peers[b].subscriber_pc().offline = false;
    w.run(Duration::from_millis(1000));
    for n in 10..20u64 {
        w.send(a, mid, &[0xA0, n as u8], n * 960);
        w.run(Duration::from_millis(20));
    }
    assert!(w.peers[b].subscriber_pc().connected, "bob connects");
    let got: Vec<u8> = w.received(b).iter().map(|f| f[1]).collect();
    assert!(
        got.iter().all(|n| *n >= 10),
        "what alice said before bob's connection was up is not sent to him late: {got:?}"
    );
    assert!(got.len() >= 8, "bob hears alice once connected: {got:?}");
}

#[test]
fn forwarded_packets_are_measured_and_audio_is_told_from_video() {
    let mut w = two_in_a_room(Mode::V0);
    let (_, audio) = w.publish(0, MediaKind::Audio);
    let (_, video) = w.publish(0, MediaKind::Video);
    w.run(Duration::from_millis(300));
    for n in 0..(2 * delay::SAMPLE_EVERY as u64) {
        w.send(0, audio, &[0xAB, n as u8], n * 960);
        w.run(Duration::from_millis(10));
    }
    let heard = std::mem::take(&mut w.probes);
    assert!(!heard.is_empty(), "some forwarded audio was measured");
    assert!(heard.iter().all(|p| p.audio), "audio probes: {heard:?}");
    w.send(0, video, &[0x00, 1, 2, 3], 0);
    for n in 1..(2 * delay::SAMPLE_EVERY as u64) {
        w.send(0, video, &[0x01, n as u8, 2, 3], n * 3000);
        w.run(Duration::from_millis(10));
    }
    let seen = std::mem::take(&mut w.probes);
    assert!(
        seen.iter().any(|p| !p.audio),
        "forwarded video was measured as video: {seen:?}"
    );
}

#[test]
fn reliable_data_reaches_the_others_with_the_sender_identity() {
    let mut w = World::new();
    for (i, name) in ["alice", "bob", "carol"].iter().enumerate() {
        w.join("r", name, Mode::V0);
        w.run(Duration::from_millis(200));
        assert_eq!(w.peers[i].closed, None);
    }
    // alice's publisher PC needs a channel: publishing negotiates it.
    w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(500));
    let send = |w: &mut World, to: Vec<String>, payload: &[u8]| {
        let packet = lk::DataPacket {
            destination_identities: to,
            value: Some(lk::data_packet::Value::User(lk::UserPacket {
                payload: payload.to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let pc = &mut w.peers[0].publisher;
        let ch = pc.channel.expect("alice's data channel");
        assert!(pc
            .rtc
            .channel(ch)
            .unwrap()
            .write(true, &packet.encode_to_vec())
            .unwrap());
        w.run(Duration::from_millis(200));
    };
    send(&mut w, vec![], b"hello all");
    send(&mut w, vec!["carol".into()], b"just carol");
    let decode = |w: &mut World, i: usize| -> Vec<(String, Vec<u8>)> {
        w.peers[i]
            .subscriber_pc()
            .data
            .iter()
            .map(|d| {
                let p = lk::DataPacket::decode(d.as_slice()).unwrap();
                let Some(lk::data_packet::Value::User(u)) = p.value else {
                    panic!("a user packet")
                };
                (p.participant_identity, u.payload)
            })
            .collect()
    };
    let bob = decode(&mut w, 1);
    let carol = decode(&mut w, 2);
    assert_eq!(bob, vec![("alice".to_string(), b"hello all".to_vec())]);
    assert_eq!(
        carol,
        vec![
            ("alice".to_string(), b"hello all".to_vec()),
            ("alice".to_string(), b"just carol".to_vec())
        ]
    );
    assert!(
        w.peers[0].subscriber_pc().data.is_empty(),
        "no echo to the sender"
    );
}

#[test]
fn mute_and_leave_reach_the_room() {
    let mut w = two_in_a_room(Mode::V0);
    let (track, _) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(200));
    updates_of(&mut w.peers[1]);
    let alice = w.peers[0].pid;
    w.sfu.handle_signal(
        w.now,
        alice,
        Req::Mute(lk::MuteTrackRequest {
            sid: track.clone(),
            muted: true,
        }),
    );
    w.pump();
    let seen = updates_of(&mut w.peers[1]);
    let t = seen
        .iter()
        .flat_map(|p| p.tracks.iter())
        .find(|t| t.sid == track)
        .expect("bob gets alice's track info");
    assert!(t.muted, "bob sees alice's track muted");
    w.sfu.handle_signal(
        w.now,
        alice,
        Req::Leave(lk::LeaveRequest {
            reason: lk::DisconnectReason::ClientInitiated as i32,
            ..Default::default()
        }),
    );
    w.pump();
    let seen = updates_of(&mut w.peers[1]);
    assert!(
        seen.iter().any(|p| p.identity == "alice"
            && p.state == lk::participant_info::State::Disconnected as i32),
        "bob sees alice gone: {seen:?}"
    );
    assert_eq!(w.sfu.reg.list_participants("standup").unwrap().len(), 1);
}

#[test]
fn a_late_joiner_subscribes_to_what_is_published() {
    let mut w = two_in_a_room(Mode::V1);
    let (a_track, a_mid) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(200));
    let c = w.join("standup", "carol", Mode::V0);
    w.run(Duration::from_millis(400));
    for n in 0..20u64 {
        w.send(0, a_mid, &[7, n as u8], n * 960);
        w.run(Duration::from_millis(20));
    }
    assert!(!w.received(c).is_empty(), "carol (v0) hears alice (v1)");
    let others: Vec<String> = w
        .sfu
        .reg
        .list_participants("standup")
        .unwrap()
        .into_iter()
        .map(|p| p.identity)
        .collect();
    assert_eq!(others.len(), 3);
    let info = w.sfu.reg.participant_info(w.peers[0].pid).unwrap();
    assert_eq!(info.tracks[0].sid, a_track);
}

#[test]
fn duplicate_identity_replaces_the_older_session() {
    let mut w = World::new();
    w.join("r", "alice", Mode::V0);
    w.join("r", "alice", Mode::V1);
    assert_eq!(
        w.peers[0].closed,
        Some(lk::DisconnectReason::DuplicateIdentity)
    );
    assert_eq!(w.peers[1].closed, None);
    assert_eq!(w.sfu.reg.list_participants("r").unwrap().len(), 1);
}

#[test]
fn room_and_server_caps_refuse_with_reasons() {
    let mut w = World::with_config(SfuConfig {
        max_participants: 2,
        max_rooms: 1,
        ..Default::default()
    });
    w.join("r", "a", Mode::V0);
    w.join("r", "b", Mode::V0);
    let e = w
        .sfu
        .join(w.now, 0, World::params("r", "c", Mode::V0))
        .unwrap_err();
    assert_eq!(e, JoinError::RoomFull("r".into(), 2));
    let e = w
        .sfu
        .join(w.now, 0, World::params("other", "c", Mode::V0))
        .unwrap_err();
    assert_eq!(e, JoinError::TooManyRooms(1));
}

#[test]
fn empty_rooms_close_after_the_timeout() {
    let mut w = World::with_config(SfuConfig {
        empty_timeout: Duration::from_secs(10),
        ..Default::default()
    });
    let a = w.join("r", "alice", Mode::V0);
    let pid = w.peers[a].pid;
    w.sfu
        .remove_participant(w.now, pid, lk::DisconnectReason::ClientInitiated);
    w.run(Duration::from_secs(5));
    assert_eq!(
        w.sfu.reg.list_rooms(&[]).len(),
        1,
        "kept while the timeout runs"
    );
    w.run(Duration::from_secs(6));
    assert!(w.sfu.reg.list_rooms(&[]).is_empty(), "closed after it");
}

#[test]
fn garbage_datagrams_are_ignored() {
    let mut w = two_in_a_room(Mode::V0);
    let from: SocketAddr = "10.9.9.9:999".parse().unwrap();
    let to: SocketAddr = SFU_ADDR.parse().unwrap();
    for n in 0..200u8 {
        let junk: Vec<u8> = (0..(n as usize % 40 + 1))
            .map(|i| n.wrapping_mul(i as u8))
            .collect();
        w.sfu.receive(w.now, Protocol::Udp, from, to, &junk);
    }
    // A STUN binding request header with a bogus attribute, from an unknown peer.
    let mut stun = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[1; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x04, b'x', b'y', b'z', b'w']);
    w.sfu.receive(w.now, Protocol::Udp, from, to, &stun);
    w.pump();
    w.run(Duration::from_millis(200));
    assert!(
        w.peers.iter().all(|p| p.closed.is_none()),
        "nobody is disconnected"
    );
    assert_eq!(w.sfu.participant_count(), 2);
}

/// Simulcast layer choice: the wanted layer if it flows, else the next lower one flowing, else
/// the next higher one. (Forwarding simulcast: `simulcast_publishing_forwards_one_layer`.)
#[test]
fn simulcast_layer_choice_follows_what_flows() {
    let now = Instant::now();
    let mut t = PubTrack {
        sid: "TR_x".into(),
        cid: "c".into(),
        owner: 1,
        kind: MediaKind::Video,
        mid: None,
        info: lk::TrackInfo::default(),
        rids: vec!["f".into(), "h".into(), "q".into()],
        last_keyframe_request: HashMap::new(),
        layer_seen: HashMap::new(),
        params: None,
    };
    let f = Some("f".into());
    let h = Some("h".into());
    let q = Some("q".into());
    assert_eq!(
        t.flowing_layer(f, now),
        f,
        "nothing seen yet: keep the wish"
    );
    t.layer_seen.insert("q".into(), now);
    t.layer_seen.insert("h".into(), now);
    // The browser has not ramped up to f yet: h, the best below f that flows.
    assert_eq!(t.flowing_layer(f, now), h);
    assert_eq!(t.flowing_layer(q, now), q);
    t.layer_seen.insert("f".into(), now);
    assert_eq!(t.flowing_layer(f, now), f);
    // h and q stop (bandwidth drop upstream): a subscriber wanting q gets f rather than nothing.
    let later = now + Duration::from_secs(2);
    t.layer_seen.insert("f".into(), later);
    assert_eq!(t.flowing_layer(q, later), f);
}

/// A str0m client publishing three simulcast layers (rids f, h, q) may write every layer after
/// the SFU's answer, and the subscriber gets one of them (v0 and v1).
#[test]
fn simulcast_publishing_forwards_one_layer() {
    for mode in [Mode::V0, Mode::V1] {
        let mut w = two_in_a_room(mode);
        let pid = w.peers[0].pid;
        let layers = ["f", "h", "q"];
        w.sfu.handle_signal(
            w.now,
            pid,
            Req::AddTrack(lk::AddTrackRequest {
                cid: "cam".into(),
                r#type: lk::TrackType::Video as i32,
                layers: (0..3)
                    .map(|q| lk::VideoLayer {
                        quality: q,
                        width: 320 << q,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
        );
        w.pump();
        let mut mid = None;
        w.offer(0, |api| {
            let mut sim = str0m::media::Simulcast::new();
            for rid in layers {
                sim.add_send_layer(str0m::media::SimulcastLayer::new(rid));
            }
            mid = Some(api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("stream".into()),
                Some("cam".into()),
                Some(sim),
            ));
        });
        let mid = mid.unwrap();
        w.run(Duration::from_millis(300));
        for n in 0..30u64 {
            let now = w.now;
            let pc = &mut w.peers[0].publisher;
            let pt = pc
                .rtc
                .writer(mid)
                .unwrap()
                .payload_params()
                .find(|p| p.spec().codec == Codec::Vp8)
                .map(|p| p.pt())
                .unwrap();
            for rid in layers {
                // A VP8 keyframe header (P bit clear), then the layer's name.
                let frame = [0x10, 0, 0, 0x9d, 0x01, 0x2a, 1, 0, 1, 0, rid.as_bytes()[0]];
                let time = MediaTime::new(n * 3000, str0m::media::Frequency::NINETY_KHZ);
                pc.rtc
                    .writer(mid)
                    .unwrap()
                    .rid(rid.into())
                    .write(pt, now, time, frame.to_vec())
                    .unwrap_or_else(|e| panic!("{mode:?}: writing layer {rid}: {e}"));
            }
            w.run(Duration::from_millis(33));
        }
        let got = w.received(1);
        assert!(
            got.len() >= 20,
            "{mode:?}: bob receives video ({} frames)",
            got.len()
        );
        // One layer at a time (it may switch as the bandwidth estimate moves; a switch down can
        // repeat one frame time): about one frame per frame time, not three.
        assert!(
            got.len() <= 35,
            "{mode:?}: one layer is forwarded ({} frames)",
            got.len()
        );
    }
}

#[test]
fn loud_audio_makes_an_active_speaker() {
    let mut w = two_in_a_room(Mode::V1);
    let (_, mid) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(200));
    w.peers[1].take(|m| matches!(m, Resp::SpeakersChanged(_)).then_some(()));
    for n in 0..50u64 {
        // -10 dBov: talking.
        w.send_with_level(0, mid, Some(-10), &[1, 2, 3], n * 960);
        w.run(Duration::from_millis(20));
    }
    let alice = w.peers[0].sid.clone();
    let heard = w.peers[1].take(|m| match m {
        Resp::SpeakersChanged(s) => Some(s.speakers.clone()),
        _ => None,
    });
    assert!(
        heard
            .iter()
            .flatten()
            .any(|s| s.sid == alice && s.active && s.level > 0.1),
        "bob is told alice speaks: {heard:?}"
    );
}

#[test]
fn a_stopped_sender_unpublishes_its_track() {
    let mut w = two_in_a_room(Mode::V1);
    let (track, mid) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(300));
    assert_eq!(
        w.sfu
            .reg
            .participant_info(w.peers[0].pid)
            .unwrap()
            .tracks
            .len(),
        1
    );
    updates_of(&mut w.peers[1]);
    // The browser's unpublishTrack(): removeTrack(sender) and a new offer.
    w.offer(0, |api| api.set_direction(mid, Direction::Inactive));
    w.run(Duration::from_millis(100));
    let seen = updates_of(&mut w.peers[1]);
    let last = seen
        .iter()
        .rev()
        .find(|p| p.identity == "alice")
        .expect("bob hears of it");
    assert!(last.tracks.iter().all(|t| t.sid != track), "{last:?}");
    assert!(w
        .sfu
        .reg
        .participant_info(w.peers[0].pid)
        .unwrap()
        .tracks
        .is_empty());
}

#[test]
fn a_dropped_session_resumes_within_the_timeout_and_not_after() {
    let mut w = two_in_a_room(Mode::V0);
    let (alice, sid) = (w.peers[0].pid, w.peers[0].sid.clone());
    updates_of(&mut w.peers[1]);
    w.sfu.session_lost(w.now, alice);
    w.run(Duration::from_secs(5));
    let mut again = World::params("standup", "alice", Mode::V0);
    again.resume_sid = Some(sid.clone());
    let (pid, same) = w.sfu.join(w.now, 0, again.clone()).unwrap();
    assert_eq!(
        (pid, same.as_str()),
        (alice, sid.as_str()),
        "the same participant"
    );
    w.pump();
    assert!(
        w.peers[0]
            .inbox
            .iter()
            .any(|m| matches!(m, Resp::Reconnect(_))),
        "alice gets a reconnect response"
    );
    assert!(
        updates_of(&mut w.peers[1])
            .iter()
            .all(|p| p.state != lk::participant_info::State::Disconnected as i32),
        "bob never sees alice leave"
    );
    // Dropped again, and back too late: gone, and told so.
    w.sfu.session_lost(w.now, alice);
    w.run(SfuConfig::default().departure_timeout + Duration::from_secs(1));
    assert_eq!(w.sfu.participant_count(), 1);
    let e = w.sfu.join(w.now, 0, again).unwrap_err();
    assert_eq!(e, JoinError::CannotResume(sid));
}

#[test]
fn a_small_bandwidth_estimate_caps_the_layer() {
    let rids: Vec<str0m::media::Rid> = vec!["f".into(), "h".into(), "q".into()];
    let cost = |r: &str0m::media::Rid| room::default_layer_bitrate(r);
    let f = Some("f".into());
    let h = Some("h".into());
    let q = Some("q".into());
    assert_eq!(
        room::cap_layer(f, &rids, None, cost),
        f,
        "no estimate yet: as wanted"
    );
    assert_eq!(room::cap_layer(f, &rids, Some(5_000_000), cost), f);
    assert_eq!(room::cap_layer(f, &rids, Some(600_000), cost), h);
    assert_eq!(room::cap_layer(f, &rids, Some(200_000), cost), q);
    assert_eq!(
        room::cap_layer(f, &rids, Some(50_000), cost),
        q,
        "the lowest, not nothing"
    );
    assert_eq!(
        room::cap_layer(q, &rids, Some(5_000_000), cost),
        q,
        "never above the wish"
    );
}

#[test]
fn a_client_that_never_answers_is_disconnected_and_nobody_else() {
    let mut w = World::new();
    // The first offer goes out inside join(); mark the peer silent before it is delivered.
    let (pid, sid) = w
        .sfu
        .join(w.now, 0, World::params("r", "mute", Mode::V0))
        .unwrap();
    let publisher = Pc::new(w.now, "10.0.0.9:1");
    w.peers.push(Peer {
        pid,
        sid,
        inbox: vec![],
        publisher,
        subscriber: Some(Pc::new(w.now, "10.0.0.9:2")),
        offer_id: 0,
        closed: None,
        silent: true,
    });
    w.pump();
    let b = w.join("r", "bob", Mode::V0);
    w.run(OFFER_TIMEOUT - Duration::from_secs(1));
    assert_eq!(w.peers[0].closed, None, "still waiting");
    w.run(Duration::from_secs(2));
    assert_eq!(w.peers[0].closed, Some(lk::DisconnectReason::StateMismatch));
    assert_eq!(w.peers[b].closed, None, "bob is not affected");
    assert!(w.peers[b].subscriber_pc().connected);
    assert_eq!(w.sfu.participant_count(), 1);
}

#[test]
fn revoked_permissions_unpublish_and_unsubscribe_and_granted_ones_subscribe_again() {
    let mut w = two_in_a_room(Mode::V0);
    let (alice, bob) = (w.peers[0].pid, w.peers[1].pid);
    let (track, mid) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(300));
    let mut ts = 0;
    // alice says ten frames; how many of them bob hears.
    let mut say = |w: &mut World, mid: Mid| {
        let before = w.received(1).len();
        for n in 0..10 {
            w.send(0, mid, &[0xB0, n], ts);
            ts += 960;
            w.run(Duration::from_millis(20));
        }
        w.received(1).len() - before
    };
    assert!(say(&mut w, mid) > 0, "bob hears alice");
    // The admin sets a participant's permissions (Twirp UpdateParticipant) and the SFU's
    // signalling goes out.
    let set_perms = |w: &mut World, pid: Pid, can_publish, can_subscribe| {
        let perms = Permissions {
            can_publish,
            can_subscribe,
            ..Default::default()
        };
        w.sfu
            .update_participant(pid, None, None, HashMap::new(), Some(perms))
            .unwrap();
        w.pump();
    };

    set_perms(&mut w, alice, false, true);
    let gone = w.peers[0].take(|m| match m {
        Resp::TrackUnpublished(t) => Some(t.track_sid.clone()),
        _ => None,
    });
    assert_eq!(gone, vec![track.clone()], "alice is told her track is gone");
    let seen = updates_of(&mut w.peers[1]);
    assert!(
        seen.iter().any(|p| p.identity == "alice"
            && p.tracks.is_empty()
            && p.permission.as_ref().is_some_and(|p| !p.can_publish)),
        "bob hears alice publishes nothing now: {seen:?}"
    );
    w.run(Duration::from_millis(300));
    assert_eq!(say(&mut w, mid), 0, "alice's media no longer reaches bob");

    // Publishing again once allowed; then bob may no longer subscribe.
    set_perms(&mut w, alice, true, true);
    let (_, mid) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(300));
    assert!(say(&mut w, mid) > 0, "bob hears alice's new track");
    set_perms(&mut w, bob, true, false);
    w.run(Duration::from_millis(300));
    assert_eq!(
        say(&mut w, mid),
        0,
        "bob may not subscribe: nothing reaches him"
    );

    // Granted again: bob subscribes to what is published and hears it.
    set_perms(&mut w, bob, true, true);
    w.run(Duration::from_millis(300));
    assert!(
        say(&mut w, mid) > 0,
        "bob hears alice again once he may subscribe"
    );
}

#[test]
fn own_metadata_changes_need_the_grant() {
    let mut w = two_in_a_room(Mode::V0);
    let update = |w: &mut World, i: usize| {
        let pid = w.peers[i].pid;
        w.sfu.handle_signal(
            w.now,
            pid,
            Req::UpdateMetadata(lk::UpdateParticipantMetadata {
                name: "New Name".into(),
                ..Default::default()
            }),
        );
        w.pump();
        w.sfu.reg.participant_info(pid).unwrap().name
    };
    assert_eq!(
        update(&mut w, 0),
        "alice",
        "no canUpdateOwnMetadata: unchanged"
    );
    let mut p = World::params("standup", "carol", Mode::V0);
    p.can_update_metadata = true;
    let (pid, sid) = w.sfu.join(w.now, 0, p).unwrap();
    w.peers.push(Peer {
        pid,
        sid,
        inbox: vec![],
        publisher: Pc::new(w.now, "10.0.0.8:1"),
        subscriber: Some(Pc::new(w.now, "10.0.0.8:2")),
        offer_id: 0,
        closed: None,
        silent: false,
    });
    w.pump();
    assert_eq!(update(&mut w, 2), "New Name");
    let seen = updates_of(&mut w.peers[1]);
    assert!(
        seen.iter()
            .any(|p| p.identity == "carol" && p.name == "New Name"),
        "bob hears of it"
    );
}

fn quality_updates(p: &mut Peer) -> Vec<HashMap<String, i32>> {
    p.take(|m| match m {
        Resp::ConnectionQuality(u) => Some(
            u.updates
                .iter()
                .map(|i| (i.participant_sid.clone(), i.quality))
                .collect(),
        ),
        _ => None,
    })
}

#[test]
fn everyone_is_told_the_connection_quality_of_the_room() {
    for mode in [Mode::V0, Mode::V1] {
        let mut w = two_in_a_room(mode);
        let (alice, bob) = (w.peers[0].sid.clone(), w.peers[1].sid.clone());
        w.peers.iter_mut().for_each(|p| p.inbox.clear());
        w.run(quality::QUALITY_INTERVAL + Duration::from_millis(100));
        for i in 0..2 {
            let got = quality_updates(&mut w.peers[i]);
            assert!(!got.is_empty(), "{mode:?}: participant {i} gets updates");
            let last = got.last().unwrap();
            let excellent = lk::ConnectionQuality::Excellent as i32;
            assert_eq!(
                (last.get(&alice), last.get(&bob)),
                (Some(&excellent), Some(&excellent)),
                "{mode:?}: a lossless network is excellent for both: {got:?}"
            );
        }
        // Not more often than every two seconds.
        w.run(Duration::from_secs(4));
        let n = quality_updates(&mut w.peers[1]).len();
        assert!((2..=3).contains(&n), "{mode:?}: {n} updates in 4 s");

        // alice's signal connection drops: bob sees her lost; she is not sent anything.
        let alice_pid = w.peers[0].pid;
        w.sfu.session_lost(w.now, alice_pid);
        w.peers[0].inbox.clear();
        w.run(quality::QUALITY_INTERVAL + Duration::from_millis(100));
        let got = quality_updates(&mut w.peers[1]);
        assert_eq!(
            got.last().and_then(|u| u.get(&alice)),
            Some(&(lk::ConnectionQuality::Lost as i32)),
            "{mode:?}: {got:?}"
        );
        assert!(quality_updates(&mut w.peers[0]).is_empty());
    }
}

// ---------------------------------------------------------------- packet-level forwarding

use super::rtp::{self as fwd, Rewrite};

#[test]
fn rewriting_stays_continuous_across_a_layer_switch() {
    let mut r = Rewrite::default();
    assert!(!r.started());
    assert_eq!(r.map(5, 0), None, "nothing is mapped before a start");
    // Layer h: extended sequence numbers with a rollover counter of 1; the output starts at
    // rollover counter 0 with the input's low 16 bits and keeps the input's timestamps.
    let h0 = 65_536 + 1_000;
    r.start(h0, 90_000, 3000);
    for i in 0..5u64 {
        let ts = 90_000 + 3000 * (i as u32 / 2);
        assert_eq!(r.map(h0 + i, ts), Some((1_000 + i, ts)));
    }
    // A retransmission of an earlier packet keeps its place and does not move the end.
    assert_eq!(r.map(h0 + 2, 93_000), Some((1_002, 93_000)));
    // Switch to layer f at its keyframe: another SSRC, unrelated numbers.
    let f0 = 40_000u64;
    let f_ts = 4_000_000_000u32;
    r.start(f0, f_ts, 3000);
    assert_eq!(
        r.map(f0, f_ts),
        Some((1_005, 96_000 + 3000)),
        "next sequence number, one frame step after the last timestamp"
    );
    assert_eq!(r.map(f0 + 1, f_ts), Some((1_006, 99_000)));
    // f's timestamps wrap around 2^32; the output follows without a jump.
    let wrapped = f_ts.wrapping_add(400_000_000);
    assert_eq!(
        r.map(f0 + 2, wrapped),
        Some((1_007, 99_000u32.wrapping_add(400_000_000)))
    );
    // Packets of f from before the switch point (reordered) would collide: dropped.
    assert_eq!(r.map(f0 - 1, f_ts - 3000), None);
    // A late packet of f (repaired by retransmission) after newer ones: its own place.
    assert_eq!(
        r.map(f0 + 10, f_ts.wrapping_add(6000)),
        Some((1_015, 105_000))
    );
    assert_eq!(
        r.map(f0 + 9, f_ts.wrapping_add(6000)),
        Some((1_014, 105_000))
    );
    // And back to h: continues after the highest sequence number sent.
    r.start(h0 + 500, 200_000, 3000);
    assert_eq!(r.map(h0 + 500, 200_000), Some((1_016, 108_000)));
    // Another track forwarded later on the same section (same SSRC) goes on from there, so
    // the receiver's sequence (and SRTP rollover counter) stays continuous.
    let mut next = Rewrite::default();
    next.continue_after(r.last_out().unwrap());
    next.start(7, 555, 3000);
    assert_eq!(next.map(7, 555), Some((1_017, 111_000)));
}

#[test]
fn vp8_keyframes_are_found_from_the_payload_descriptor_and_header() {
    // Minimal descriptor (S = 1, PID = 0), then the VP8 payload header: P = 0 is a keyframe.
    assert!(fwd::vp8_starts_keyframe(&[0x10, 0x00, 0x00, 0x9d]));
    assert!(!fwd::vp8_starts_keyframe(&[0x10, 0x01, 0x00, 0x00]));
    // Not the start of a frame, or not the first partition: never a keyframe start.
    assert!(!fwd::vp8_starts_keyframe(&[0x00, 0x00, 0x00]));
    assert!(!fwd::vp8_starts_keyframe(&[0x11, 0x00, 0x00]));
    // Extended descriptor as Chrome sends it: X, then I (15-bit PictureID), L, T.
    let key = [0x90, 0xe0, 0x80 | 0x12, 0x34, 0x05, 0x20, 0x50, 0x2a, 0x01];
    assert!(fwd::vp8_starts_keyframe(&key));
    let delta = [0x90, 0xe0, 0x80 | 0x12, 0x35, 0x05, 0x20, 0x51, 0x2a, 0x01];
    assert!(!fwd::vp8_starts_keyframe(&delta));
    // 7-bit PictureID, no L/T.
    assert!(fwd::vp8_starts_keyframe(&[0x90, 0x80, 0x12, 0x00]));
    assert!(!fwd::vp8_starts_keyframe(&[0x90, 0x80, 0x12, 0x01]));
    // K only (KEYIDX octet).
    assert!(fwd::vp8_starts_keyframe(&[0x90, 0x10, 0x03, 0x00]));
    // Through the codec dispatch as the forwarder uses it.
    assert!(fwd::starts_keyframe(Codec::Vp8, &key));
    assert!(!fwd::starts_keyframe(Codec::Opus, &key), "not video");
}

#[test]
fn h264_keyframes_are_found_in_single_nal_stap_a_and_fu_a() {
    // Single NAL unit packets: IDR slice (5) and SPS (7) start a keyframe; a non-IDR slice
    // (1), a PPS (8) and an SEI (6) do not.
    assert!(fwd::h264_starts_keyframe(&[0x65, 0x88, 0x80]));
    assert!(fwd::h264_starts_keyframe(&[0x67, 0x42, 0xc0, 0x1f]));
    assert!(!fwd::h264_starts_keyframe(&[0x41, 0x9a, 0x00]));
    assert!(!fwd::h264_starts_keyframe(&[0x68, 0xce, 0x3c]));
    assert!(!fwd::h264_starts_keyframe(&[0x06, 0x05]));
    // STAP-A (24) of SPS + PPS, as browsers send before an IDR.
    let stap = [0x78, 0x00, 0x03, 0x67, 0x42, 0xc0, 0x00, 0x02, 0x68, 0xce];
    assert!(fwd::h264_starts_keyframe(&stap));
    // STAP-A of SEI + PPS only.
    let stap_delta = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x68, 0xce];
    assert!(!fwd::h264_starts_keyframe(&stap_delta));
    // FU-A (28): the start fragment of an IDR slice; not a middle one, nor a non-IDR start.
    assert!(fwd::h264_starts_keyframe(&[0x7c, 0x85, 0xb8]));
    assert!(!fwd::h264_starts_keyframe(&[0x7c, 0x05, 0xb8]));
    assert!(!fwd::h264_starts_keyframe(&[0x7c, 0x81, 0x9a]));
    assert!(fwd::starts_keyframe(Codec::H264, &stap));
}

#[test]
fn other_codecs_keyframes_and_unknown_ones_conservatively() {
    // VP9: B = 1, P = 0 (no layer indices), and with L = 1 only on spatial layer 0.
    assert!(fwd::vp9_starts_keyframe(&[0x08, 0x00]));
    assert!(!fwd::vp9_starts_keyframe(&[0x48, 0x00]));
    assert!(!fwd::vp9_starts_keyframe(&[0x00, 0x00]));
    assert!(fwd::vp9_starts_keyframe(&[0xa8, 0x80, 0x01, 0x00, 0x00]));
    assert!(!fwd::vp9_starts_keyframe(&[0xa8, 0x80, 0x01, 0x02, 0x00]));
    // H.265: IDR_W_RADL (19) single NAL, an AP with a VPS, an FU start of a CRA (21).
    assert!(fwd::h265_starts_keyframe(&[19 << 1, 0x01, 0xaf]));
    assert!(!fwd::h265_starts_keyframe(&[1 << 1, 0x01, 0xaf]));
    assert!(fwd::h265_starts_keyframe(&[
        48 << 1,
        0x01,
        0x00,
        0x02,
        32 << 1,
        0x01
    ]));
    assert!(fwd::h265_starts_keyframe(&[49 << 1, 0x01, 0x80 | 21, 0x00]));
    assert!(!fwd::h265_starts_keyframe(&[49 << 1, 0x01, 21, 0x00]));
    // AV1: N bit of the aggregation header.
    assert!(fwd::av1_starts_keyframe(&[0x18, 0x00]));
    assert!(!fwd::av1_starts_keyframe(&[0x10, 0x00]));
    // A codec it cannot parse is never taken for a keyframe.
    assert!(!fwd::starts_keyframe(Codec::Opus, &[0x10, 0x00, 0x00]));
}

#[test]
fn short_and_malformed_payloads_never_panic() {
    let codecs = [
        Codec::Vp8,
        Codec::Vp9,
        Codec::H264,
        Codec::H265,
        Codec::Av1,
        Codec::Opus,
    ];
    let samples: [&[u8]; 6] = [
        &[0x90, 0xe0, 0x80 | 0x12, 0x34, 0x05, 0x20, 0x50],
        &[0x78, 0xff, 0xff, 0x67],
        &[0x78, 0x00, 0x00, 0x65],
        &[0x7c],
        &[48 << 1, 0x01, 0xff, 0xff],
        &[0xa8, 0x80],
    ];
    for c in codecs {
        for s in samples {
            for n in 0..=s.len() {
                let _ = fwd::starts_keyframe(c, &s[..n]);
            }
        }
        // Pseudo-random payloads of every length up to 64.
        let mut x: u32 = 0x1234_5678;
        for len in 0..=64usize {
            for _ in 0..50 {
                let mut buf = [0u8; 64];
                for b in buf.iter_mut().take(len) {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *b = (x >> 24) as u8;
                }
                let _ = fwd::starts_keyframe(c, &buf[..len]);
            }
        }
    }
    // Cut-off descriptors are not keyframes.
    assert!(!fwd::vp8_starts_keyframe(&[0x90, 0xe0, 0x80 | 0x12]));
    assert!(!fwd::vp8_starts_keyframe(&[]));
    assert!(!fwd::h264_starts_keyframe(&[0x78, 0x00]));
}

#[test]
fn vp8_picture_ids_stay_continuous_across_a_layer_switch() {
    use str0m::rtp::Vp8Descriptor;
    // X, I (15-bit PictureID), L (TL0PICIDX), T; then a VP8 payload header byte.
    let desc = |pic: u16, tl0: u8, key: bool| {
        let p = [
            0x90,
            0xe0,
            0x80 | (pic >> 8) as u8,
            pic as u8,
            tl0,
            0x20,
            u8::from(!key),
        ];
        Vp8Descriptor::parse(&p).unwrap()
    };
    let mut m = fwd::Vp8Munge::default();
    m.start(&desc(100, 7, true));
    assert_eq!(m.map(&desc(100, 7, true)), Some((100, Some(7))));
    assert!(
        m.patch(&desc(101, 7, false)).is_none(),
        "nothing to rewrite"
    );
    // Switch to a layer numbering its pictures far away (and wrapping at 2^15).
    m.start(&desc(32_767, 200, true));
    assert_eq!(m.map(&desc(32_767, 200, true)), Some((102, Some(8))));
    assert_eq!(m.map(&desc(0, 201, false)), Some((103, Some(9))));
    assert!(m.patch(&desc(1, 201, false)).is_some());
    // Only 15-bit PictureIDs are rewritten (7-bit ones wrap at 128); nothing for cut-off ones.
    assert!(fwd::vp8_has_long_picture_id(&[
        0x90, 0x80, 0x80, 0x05, 0x00
    ]));
    assert!(!fwd::vp8_has_long_picture_id(&[0x90, 0x80, 0x05, 0x00]));
    assert!(!fwd::vp8_has_long_picture_id(&[0x10, 0x00, 0x00]));
    assert!(!fwd::vp8_has_long_picture_id(&[0x90, 0x80]));
}

/// Whether a video frame lost on the way to bob reaches him anyway (bob's NACK answered with a
/// retransmission) when he notices the loss only `gap` later, with the next frame.
fn lost_frame_is_resent(gap: Duration) -> bool {
    let mut w = two_in_a_room(Mode::V0);
    let (_, mid) = w.publish(0, MediaKind::Video);
    w.run(Duration::from_millis(300));
    w.send(0, mid, &[0x00, 0, 2, 3], 0);
    for n in 1..10u64 {
        w.run(Duration::from_millis(33));
        w.send(0, mid, &[0x01, n as u8, 2, 3], n * 3000);
    }
    w.run(Duration::from_millis(33));
    w.peers[1].subscriber_pc().offline = true;
    w.send(0, mid, &[0x01, 10, 2, 3], 10 * 3000);
    w.run(Duration::from_millis(20));
    w.peers[1].subscriber_pc().offline = false;
    w.run(gap);
    w.send(0, mid, &[0x01, 11, 2, 3], 11 * 3000);
    w.run(Duration::from_millis(500));
    let got: Vec<u8> = w.received(1).iter().map(|f| f[1]).collect();
    assert!(got.contains(&9), "bob's video ran up to the loss: {got:?}");
    got.contains(&10)
}

#[test]
fn lost_video_is_resent_within_a_second_and_not_later() {
    assert!(
        lost_frame_is_resent(Duration::from_millis(300)),
        "a NACK 0.3 s after the loss is answered"
    );
    // Kept for RTX_AGE (1 s), not str0m's 3 s: what a late NACK would ask for costs memory in
    // every subscriber's history and comes too late for the receiver's jitter buffer anyway.
    assert!(
        !lost_frame_is_resent(Duration::from_millis(1500)),
        "a NACK 1.5 s after the loss finds the packet gone from the history"
    );
}

// ------------------------------------------------------------------------------------ limits

fn refusals(p: &mut Peer) -> Vec<lk::RequestResponse> {
    p.take(|m| match m {
        Resp::RequestResponse(r) => Some(r.clone()),
        _ => None,
    })
}

fn signal(w: &mut World, i: usize, msg: Req) {
    let pid = w.peers[i].pid;
    w.sfu.handle_signal(w.now, pid, msg);
    w.pump();
}

#[test]
fn add_track_is_capped_in_number_and_name_size() {
    let mut w = two_in_a_room(Mode::V0);
    updates_of(&mut w.peers[1]);
    let add = |cid: String, name: String| {
        Req::AddTrack(lk::AddTrackRequest {
            cid,
            name,
            r#type: lk::TrackType::Audio as i32,
            ..Default::default()
        })
    };
    signal(
        &mut w,
        0,
        add("long".into(), "n".repeat(limits::MAX_TRACK_NAME + 1)),
    );
    let r = refusals(&mut w.peers[0]);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].reason,
        lk::request_response::Reason::LimitExceeded as i32
    );
    assert!(r[0].message.contains("track name"), "{}", r[0].message);
    assert!(!r[0].message.contains("nnn"), "no content in the message");
    match &r[0].request {
        Some(lk::request_response::Request::AddTrack(a)) => {
            assert_eq!(a.cid, "long");
            assert!(a.name.is_empty());
        }
        other => panic!("the refusal names the request: {other:?}"),
    }
    for i in 0..limits::MAX_TRACKS + 5 {
        signal(&mut w, 0, add(format!("c{i}"), format!("t{i}")));
    }
    let published = w.peers[0].take(|m| matches!(m, Resp::TrackPublished(_)).then_some(()));
    assert_eq!(published.len(), limits::MAX_TRACKS);
    let r = refusals(&mut w.peers[0]);
    assert_eq!(r.len(), 5);
    assert!(r[0].message.contains("at most 32"), "{}", r[0].message);
    let info = w.sfu.reg.participant_info(w.peers[0].pid).unwrap();
    assert_eq!(info.tracks.len(), limits::MAX_TRACKS);
    // Bob heard one update per published track, none for the refused ones.
    let seen = updates_of(&mut w.peers[1]);
    assert_eq!(seen.len(), limits::MAX_TRACKS, "{}", seen.len());
}

#[test]
fn the_encryption_and_codec_of_a_track_reach_its_publisher_and_the_room() {
    let mut w = two_in_a_room(Mode::V0);
    updates_of(&mut w.peers[1]);
    let gcm = lk::encryption::Type::Gcm as i32;
    signal(
        &mut w,
        0,
        Req::AddTrack(lk::AddTrackRequest {
            cid: "e2ee-cam".into(),
            name: "camera".into(),
            r#type: lk::TrackType::Video as i32,
            encryption: gcm,
            simulcast_codecs: vec![lk::SimulcastCodec {
                codec: "vp8".into(),
                cid: "e2ee-cam".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    );
    let published = w.peers[0].take(|m| match m {
        Resp::TrackPublished(t) => t.track.clone(),
        _ => None,
    });
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].encryption, gcm, "the publisher's TrackInfo");
    // Bob learns it from the participant update, so his client knows to decrypt.
    let seen = updates_of(&mut w.peers[1]);
    let track = seen
        .iter()
        .flat_map(|p| p.tracks.iter())
        .find(|t| t.sid == published[0].sid)
        .expect("bob hears of the track");
    assert_eq!(track.encryption, gcm, "the subscriber's TrackInfo");
    // Known before the first packet: livekit-client sets up decryption from it on subscribing.
    assert_eq!(track.mime_type, "video/VP8");
}

#[test]
fn unsubscribing_unknown_tracks_keeps_nothing_and_big_frames_are_refused() {
    let mut w = two_in_a_room(Mode::V0);
    let (track, _) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(300));
    let sub = |ids: Vec<String>, subscribe: bool| {
        Req::Subscription(lk::UpdateSubscription {
            track_sids: ids,
            subscribe,
            participant_tracks: vec![],
        })
    };
    let unknown: Vec<String> = (0..limits::MAX_TRACK_IDS)
        .map(|i| format!("TR_{i:012}"))
        .collect();
    signal(&mut w, 1, sub(unknown.clone(), false));
    signal(&mut w, 1, sub(unknown.clone(), false));
    let bob = w.peers[1].pid;
    assert!(
        w.sfu.reg.parts[&bob].unsubscribed.is_empty(),
        "unknown ids kept"
    );
    assert!(refusals(&mut w.peers[1]).is_empty());
    // A real track is remembered as unsubscribed, and forgotten when it ends.
    signal(&mut w, 1, sub(vec![track.clone()], false));
    assert_eq!(w.sfu.reg.parts[&bob].unsubscribed.len(), 1);
    assert!(!w.sfu.reg.parts[&bob].subs.contains_key(&track));
    signal(&mut w, 1, sub(vec![track.clone()], true));
    assert!(w.sfu.reg.parts[&bob].unsubscribed.is_empty());
    assert!(w.sfu.reg.parts[&bob].subs.contains_key(&track));
    signal(&mut w, 1, sub(vec![track.clone()], false));
    w.sfu.subscriptions().unpublish(&track, None);
    assert!(
        w.sfu.reg.parts[&bob].unsubscribed.is_empty(),
        "gone with the track"
    );
    // Over the limit (both lists count): refused whole.
    let mut big = sub(unknown.clone(), true);
    if let Req::Subscription(s) = &mut big {
        s.participant_tracks.push(lk::ParticipantTracks {
            participant_sid: "PA_x".into(),
            track_sids: vec!["TR_one_more".into()],
        });
    }
    signal(&mut w, 1, big);
    let r = refusals(&mut w.peers[1]);
    assert_eq!(r.len(), 1);
    assert!(r[0].message.contains("4096"), "{}", r[0].message);
    let settings = Req::TrackSetting(lk::UpdateTrackSettings {
        track_sids: vec!["TR_x".into(); limits::MAX_TRACK_IDS + 1],
        ..Default::default()
    });
    signal(&mut w, 1, settings);
    assert_eq!(refusals(&mut w.peers[1]).len(), 1);
}

#[test]
fn a_track_of_another_room_cannot_be_subscribed_by_its_id() {
    let mut w = two_in_a_room(Mode::V0);
    let (track, _) = w.publish(0, MediaKind::Audio);
    let c = w.join("elsewhere", "carol", Mode::V0);
    w.run(Duration::from_millis(300));
    signal(
        &mut w,
        c,
        Req::Subscription(lk::UpdateSubscription {
            track_sids: vec![track.clone()],
            subscribe: true,
            participant_tracks: vec![],
        }),
    );
    let carol = w.peers[c].pid;
    assert!(w.sfu.reg.parts[&carol].subs.is_empty());
}

#[test]
fn trickled_candidates_are_capped_per_connection() {
    let mut w = World::new();
    let a = w.join("standup", "alice", Mode::V0);
    for i in 0..(limits::MAX_CANDIDATES + 30) {
        let init = serde_json::json!({
            "candidate": format!("candidate:{i} 1 udp 2122260223 10.1.{}.{} 5000 typ host", i / 250, i % 250 + 1)
        });
        signal(
            &mut w,
            a,
            Req::Trickle(lk::TrickleRequest {
                candidate_init: init.to_string(),
                target: 0,
                r#final: false,
            }),
        );
    }
    let publisher = w.sfu.reg.parts[&w.peers[a].pid].publisher;
    assert_eq!(w.sfu.peers[&publisher].candidates, limits::MAX_CANDIDATES);
    assert!(
        w.peers[a].closed.is_none(),
        "trickles over the limit are ignored"
    );
}

#[test]
fn an_offer_over_the_section_or_candidate_limit_is_refused() {
    let mut w = World::new();
    let a = w.join("standup", "alice", Mode::V0);
    let b = w.join("standup", "bob", Mode::V0);
    let offer = |w: &mut World, i: usize, sdp: String| {
        signal(
            w,
            i,
            Req::Offer(lk::SessionDescription {
                r#type: "offer".into(),
                sdp,
                id: 1,
                mid_to_track_id: HashMap::new(),
            }),
        );
    };
    let mut sdp = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    for i in 0..=limits::MAX_MEDIA_SECTIONS {
        sdp.push_str(&format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\n"));
    }
    offer(&mut w, a, sdp);
    assert_eq!(w.peers[a].closed, Some(lk::DisconnectReason::StateMismatch));
    let mut sdp = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    for i in 0..=limits::MAX_CANDIDATES {
        sdp.push_str(&format!(
            "a=candidate:{i} 1 udp 1 10.0.0.{i} 9 typ host\r\n"
        ));
    }
    offer(&mut w, b, sdp);
    assert_eq!(w.peers[b].closed, Some(lk::DisconnectReason::StateMismatch));
}

#[test]
fn subscriptions_stop_at_the_media_section_limit() {
    let mut w = two_in_a_room(Mode::V0);
    let bob = w.peers[1].pid;
    let sub_peer = w.sfu.reg.parts[&bob].subscriber;
    w.sfu.peers.get_mut(&sub_peer).unwrap().sections = limits::MAX_MEDIA_SECTIONS;
    let (track, _) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(300));
    assert!(!w.sfu.reg.parts[&bob].subs.contains_key(&track));
    w.sfu.peers.get_mut(&sub_peer).unwrap().sections = limits::MAX_MEDIA_SECTIONS - 1;
    signal(
        &mut w,
        1,
        Req::Subscription(lk::UpdateSubscription {
            track_sids: vec![track.clone()],
            subscribe: true,
            participant_tracks: vec![],
        }),
    );
    assert!(w.sfu.reg.parts[&bob].subs.contains_key(&track));
    assert_eq!(w.sfu.peers[&sub_peer].sections, limits::MAX_MEDIA_SECTIONS);
}

#[test]
fn own_metadata_updates_are_capped_like_livekit() {
    let mut w = World::new();
    let mut p = World::params("standup", "carol", Mode::V0);
    p.can_update_metadata = true;
    p.attributes = [("a".to_string(), "x".repeat(60_000))]
        .into_iter()
        .collect();
    let (pid, sid) = w.sfu.join(w.now, 0, p).unwrap();
    w.peers.push(Peer {
        pid,
        sid,
        inbox: vec![],
        publisher: Pc::new(w.now, "10.0.0.8:1"),
        subscriber: Some(Pc::new(w.now, "10.0.0.8:2")),
        offer_id: 0,
        closed: None,
        silent: false,
    });
    w.pump();
    let update = |metadata: String, attributes: HashMap<String, String>| {
        Req::UpdateMetadata(lk::UpdateParticipantMetadata {
            metadata,
            attributes,
            request_id: 7,
            ..Default::default()
        })
    };
    signal(
        &mut w,
        0,
        update("m".repeat(limits::MAX_METADATA + 1), HashMap::new()),
    );
    let r = refusals(&mut w.peers[0]);
    assert_eq!((r.len(), r[0].request_id), (1, 7));
    assert!(r[0].message.contains("metadata"), "{}", r[0].message);
    // 60 000 kept + 5 000 added is over; replacing the big one is not.
    let more: HashMap<_, _> = [("b".to_string(), "y".repeat(5_000))].into_iter().collect();
    signal(&mut w, 0, update(String::new(), more.clone()));
    assert!(refusals(&mut w.peers[0])[0].message.contains("attributes"));
    let mut swap = more;
    swap.insert("a".into(), String::new());
    signal(&mut w, 0, update("m".repeat(limits::MAX_METADATA), swap));
    assert!(refusals(&mut w.peers[0]).is_empty());
    let info = w.sfu.reg.participant_info(pid).unwrap();
    assert_eq!(info.metadata.len(), limits::MAX_METADATA);
    assert_eq!(info.attributes.len(), 1);
}

impl World {
    /// Takes the SFU's output without peers to deliver it to, keeping the events.
    fn drain(&mut self) {
        while let Some(o) = self.sfu.poll_output() {
            if let Output::Event(e) = o {
                self.events.push(*e);
            }
        }
    }
}

/// The events of the SFU so far, as `(event, participant identity or "", track sid or "")`.
fn event_names(w: &mut World) -> Vec<(String, String, String)> {
    w.events
        .drain(..)
        .map(|e| {
            let who = e
                .webhook
                .participant
                .map(|p| p.identity)
                .unwrap_or_default();
            let track = e.webhook.track.map(|t| t.sid).unwrap_or_default();
            (e.webhook.event, who, track)
        })
        .collect()
}

#[test]
fn rooms_participants_and_tracks_are_announced_as_livekit_webhooks_name_them() {
    use crate::events::*;
    let mut w = World::with_config(SfuConfig {
        empty_timeout: Duration::from_secs(10),
        ..Default::default()
    });
    w.join("standup", "alice", Mode::V0);
    w.run(Duration::from_millis(300));
    let (track, _) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(200));
    let alice = w.peers[0].pid;
    signal(&mut w, 0, Req::Leave(lk::LeaveRequest::default()));
    // Every event names its room, also those of a participant already removed (webhooks are
    // ordered by room).
    let rooms: Vec<&str> = w.events.iter().map(|e| e.room()).collect();
    assert!(rooms.iter().all(|r| *r == "standup"), "{rooms:?}");
    let seen = event_names(&mut w);
    let expect = |e: &str, who: &str, t: &str| (e.to_string(), who.to_string(), t.to_string());
    assert_eq!(
        seen,
        vec![
            expect(ROOM_STARTED, "", ""),
            expect(PARTICIPANT_JOINED, "alice", ""),
            expect(TRACK_PUBLISHED, "alice", &track),
            expect(TRACK_UNPUBLISHED, "alice", &track),
            expect(PARTICIPANT_LEFT, "alice", ""),
        ]
    );
    assert!(!w.sfu.reg.parts.contains_key(&alice));
    w.run(Duration::from_secs(11));
    assert_eq!(event_names(&mut w), vec![expect(ROOM_FINISHED, "", "")]);
}

#[test]
fn a_participant_that_never_connects_is_an_aborted_connection_not_a_departure() {
    let mut w = World::new();
    let (pid, _) = w
        .sfu
        .join(w.now, 0, World::params("r", "ghost", Mode::V0))
        .unwrap();
    w.drain();
    w.sfu
        .remove_participant(w.now, pid, lk::DisconnectReason::SignalClose);
    w.drain();
    let names: Vec<String> = event_names(&mut w).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            crate::events::ROOM_STARTED,
            crate::events::PARTICIPANT_CONNECTION_ABORTED
        ]
    );
}

#[test]
fn the_token_room_config_shapes_the_room_its_join_creates_and_no_other() {
    let mut w = World::new();
    let mut p = World::params("planning", "alice", Mode::V1);
    let agents = vec![lk::RoomAgentDispatch {
        agent_name: "notes".into(),
        metadata: "{\"lang\":\"en\"}".into(),
        ..Default::default()
    }];
    p.room_settings = RoomSettings {
        max_participants: 1,
        empty_timeout: 7,
        departure_timeout: 3,
        metadata: "planning meeting".into(),
        agents: Some(agents.clone()),
        ..Default::default()
    };
    w.sfu.join(w.now, 0, p.clone()).unwrap();
    w.drain();
    let room = &w.sfu.reg.list_rooms(&[])[0];
    assert_eq!(
        (
            room.max_participants,
            room.empty_timeout,
            room.departure_timeout,
            room.metadata.as_str()
        ),
        (1, 7, 3, "planning meeting")
    );
    let started = &w.events[0];
    assert_eq!(started.name(), crate::events::ROOM_STARTED);
    assert_eq!(started.agents.as_ref(), Some(&agents));
    // The room exists now: a later token's roomConfig changes nothing, and the cap holds.
    p.identity = "bob".into();
    p.room_settings.max_participants = 10;
    assert!(matches!(
        w.sfu.join(w.now, 0, p),
        Err(JoinError::RoomFull(_, 1))
    ));
    // Without roomConfig the room gets automatic dispatch (no list).
    w.sfu
        .join(w.now, 0, World::params("other", "carol", Mode::V1))
        .unwrap();
    w.drain();
    let started = w
        .events
        .iter()
        .find(|e| e.room() == "other")
        .expect("room_started for other");
    assert_eq!(started.agents, None);
}

/// `/metrics`' RTP counters come from str0m's per-stream statistics (once a second per stream):
/// after two seconds of audio, the packets alice sent are counted in, the copies bob got are
/// counted out, and the census sees one audio track and one audio subscription.
#[test]
fn rtp_counters_follow_the_streams_statistics() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut w = two_in_a_room(Mode::V0);
    let (_, mid) = w.publish(0, MediaKind::Audio);
    w.run(Duration::from_millis(300));
    for n in 0..100u64 {
        w.send(0, mid, &[0xAB, n as u8, 3, 4, 5], n * 960);
        w.run(Duration::from_millis(20));
    }
    let c = w.sfu.rtp_counters();
    let (pin, pout) = (
        c.ingress.packets.load(Relaxed),
        c.egress.packets.load(Relaxed),
    );
    assert!((50..=100).contains(&pin), "packets in: {pin}");
    // Each stream reports at its own moment (and padding for bandwidth probes counts out).
    assert!(pout >= 50, "packets out: {pout} (in {pin})");
    assert!(c.ingress.bytes.load(Relaxed) >= 5 * pin, "bytes in");
    assert_eq!(c.egress_lost.load(Relaxed), 0, "nothing lost in memory");
    let census = w.sfu.census();
    assert_eq!(
        census,
        Census {
            published_audio: 1,
            published_video: 0,
            subscribed_audio: 1,
            subscribed_video: 0,
        }
    );
}

/// A subscriber that joins after the publisher's keyframe asks for one; the PLI confab sends
/// the publisher is counted (incoming streams' PLIs) once str0m reports the stream.
#[test]
fn keyframe_requests_to_publishers_are_counted() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut w = World::new();
    let a = w.join("standup", "alice", Mode::V0);
    w.run(Duration::from_millis(300));
    let (_, video) = w.publish(a, MediaKind::Video);
    w.run(Duration::from_millis(300));
    w.send(a, video, &[0x00, 1, 2, 3], 0);
    w.run(Duration::from_millis(50));
    w.join("standup", "bob", Mode::V0);
    for n in 1..100u64 {
        w.send(a, video, &[0x01, n as u8, 2, 3], n * 3000);
        w.run(Duration::from_millis(20));
    }
    let c = w.sfu.rtp_counters();
    assert!(
        w.peers[a].publisher.keyframe_requests > 0,
        "alice was asked"
    );
    assert!(
        c.ingress.plis.load(Relaxed) > 0,
        "the PLI sent to alice is counted"
    );
}

fn room_recording_flags(p: &mut Peer) -> Vec<bool> {
    p.take(|m| match m {
        Resp::RoomUpdate(u) => u.room.as_ref().map(|r| r.active_recording),
        _ => None,
    })
}

#[test]
fn a_track_recording_starts_at_a_keyframe_it_asked_for_and_ends_when_its_publisher_leaves() {
    use crate::sfu::{RecMsg, RecordTarget, Reply, Request};
    let mut w = World::new();
    let a = w.join("r", "alice", Mode::V0);
    let b = w.join("r", "bob", Mode::V0);
    w.run(Duration::from_millis(300));
    let (sid, mid) = w.publish(a, MediaKind::Video);
    w.run(Duration::from_millis(300));
    w.send(a, mid, &[0x01, 1, 2, 3], 0);
    w.run(Duration::from_millis(33));
    let missing = w.sfu.handle(
        w.now,
        Request::Record {
            room: "r".into(),
            egress: "EG_x".into(),
            target: RecordTarget::Track {
                sid: "TR_nope".into(),
            },
        },
    );
    assert!(matches!(missing, Reply::Recording(Err(_))), "{missing:?}");
    let before = w.peers[a].publisher.keyframe_requests;
    let started = w.sfu.handle(
        w.now,
        Request::Record {
            room: "r".into(),
            egress: "EG_1".into(),
            target: RecordTarget::Track { sid: sid.clone() },
        },
    );
    assert!(
        matches!(&started, Reply::Recording(Ok(s)) if s.identity == "alice"),
        "{started:?}"
    );
    w.pump();
    for n in 1..10u64 {
        w.send(a, mid, &[0x01, n as u8, 2, 3], n * 3000);
        w.run(Duration::from_millis(33));
    }
    assert!(
        !w.recorded.iter().any(|m| matches!(m, RecMsg::Packet(_))),
        "delta frames before the first keyframe are not recorded"
    );
    assert!(
        w.peers[a].publisher.keyframe_requests > before,
        "the recording asked alice for a keyframe"
    );
    assert_eq!(
        room_recording_flags(&mut w.peers[b]),
        vec![true],
        "bob sees the room is recorded"
    );
    w.send(a, mid, &[0x00, 9, 9, 9], 10 * 3000);
    for n in 11..15u64 {
        w.run(Duration::from_millis(33));
        w.send(a, mid, &[0x01, n as u8, 2, 3], n * 3000);
    }
    w.run(Duration::from_millis(100));
    let mut packets = w.recorded.iter().filter_map(|m| match m {
        RecMsg::Packet(p) => Some(p),
        _ => None,
    });
    let first = packets
        .next()
        .expect("packets recorded from the keyframe on");
    assert_eq!((first.payload[0] & 1, &*first.track), (0, sid.as_str()));
    assert!(packets.count() >= 3, "the deltas after it too");
    assert!(
        matches!(w.recorded.first(), Some(RecMsg::Track { track, .. }) if **track == *sid),
        "the track is announced before its first packet"
    );
    signal(&mut w, a, Req::Leave(lk::LeaveRequest::default()));
    w.run(Duration::from_millis(50));
    assert!(
        matches!(w.recorded.last(), Some(RecMsg::Ended { egress, .. }) if &**egress == "EG_1"),
        "the recording ends with its track: {:?}",
        w.recorded.last()
    );
    assert_eq!(
        room_recording_flags(&mut w.peers[b]),
        vec![false],
        "and the room is no longer recorded"
    );
}

#[test]
fn a_room_that_records_everyone_starts_a_recording_per_participant_and_refuses_encrypted_media() {
    use crate::sfu::{RecMsg, RecordRefused, RecordTarget, Reply, Request};
    let mut w = World::new();
    let a = w.join("r", "alice", Mode::V1);
    w.run(Duration::from_millis(300));
    let on = w.sfu.handle(
        w.now,
        Request::RecordRoom {
            room: "r".into(),
            filepath: Some("{room_name}-{publisher_identity}".into()),
        },
    );
    let Reply::RoomRecording(Ok(first)) = on else {
        panic!("{on:?}");
    };
    assert_eq!(first.len(), 1, "alice is recorded");
    let _b = w.join("r", "bob", Mode::V1);
    w.run(Duration::from_millis(300));
    let started: Vec<String> = w
        .recorded
        .iter()
        .filter_map(|m| match m {
            RecMsg::Started { identity, .. } => Some(identity.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec!["alice", "bob"], "bob too, as he joins");
    let off = w.sfu.handle(
        w.now,
        Request::RecordRoom {
            room: "r".into(),
            filepath: None,
        },
    );
    assert!(
        matches!(&off, Reply::RoomRecording(Ok(v)) if v.len() == 2),
        "{off:?}"
    );
    // An encrypted track cannot be recorded: refused with the reason.
    let t = lk::AddTrackRequest {
        cid: "enc".into(),
        name: "cam".into(),
        r#type: lk::TrackType::Video as i32,
        encryption: lk::encryption::Type::Gcm as i32,
        ..Default::default()
    };
    signal(&mut w, a, Req::AddTrack(t));
    let info = w.sfu.handle(
        w.now,
        Request::GetParticipant {
            room: "r".into(),
            identity: "alice".into(),
        },
    );
    let Reply::Participant(Some(p)) = info else {
        panic!("{info:?}");
    };
    let sid = p.tracks[0].sid.clone();
    let refused = w.sfu.handle(
        w.now,
        Request::Record {
            room: "r".into(),
            egress: "EG_2".into(),
            target: RecordTarget::Track { sid },
        },
    );
    assert!(
        matches!(&refused, Reply::Recording(Err(RecordRefused::Encrypted(_)))),
        "{refused:?}"
    );
}
