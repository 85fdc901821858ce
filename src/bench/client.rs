//! One synthetic participant: LiveKit v0 signalling (two PeerConnections, like livekit-client on
//! `/rtc`) with str0m as its media stack on its own UDP sockets. It publishes Opus-sized audio
//! every 20 ms and VP8-shaped video at 30 fps in three simulcast layers (keyframes every 3 s and
//! on PLI), and counts what it receives: RTP packets, frames, frame gaps and the delay from the
//! publisher's send time (stamped in every payload) to its own receipt.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaData, MediaKind, MediaTime, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc as tmpsc, watch};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::Stats;

/// What a participant's link sends to the in-process baseline server (`baseline.rs`).
pub enum Cmd {
    Join(u64, tmpsc::UnboundedSender<Resp>),
    Req(u64, Box<Req>),
}

/// What a participant sends: its media, and the simulcast layer it asks for of others' video
/// (`UpdateTrackSettings.quality`, LiveKit's 0 low, 1 medium, 2 high; `None`: asks for none).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub audio: bool,
    pub video: bool,
    pub layer: Option<i32>,
}

/// Simulcast layers, best first: rid, LiveKit quality, width, height, bits per second.
pub const LAYERS: [(&str, i32, u32, u32, u32); 3] = [
    ("f", 2, 1280, 720, 1_500_000),
    ("h", 1, 640, 360, 500_000),
    ("q", 0, 320, 180, 150_000),
];
/// Opus at 32 kbit/s in 20 ms frames.
const AUDIO_BYTES: usize = 80;
const AUDIO_EVERY: Duration = Duration::from_millis(20);
const VIDEO_EVERY: Duration = Duration::from_micros(33_333);
/// A keyframe every this many frames (3 s), four times the size of a delta frame.
const KEYFRAME_EVERY: u32 = 90;
const PING_EVERY: Duration = Duration::from_secs(5);

/// Every payload carries `MAGIC`, its source (one number per published track in the run), the
/// frame number and the send time (µs since the bench's clock base) at this offset: 0 for
/// audio, after the 10-byte VP8 keyframe header for video.
const MAGIC: [u8; 2] = [0xc0, 0xfa];
const VIDEO_STAMP_AT: usize = 10;
const STAMP_LEN: usize = 18;

/// What a participant's task is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Go on publishing and receiving.
    Run,
    /// Say goodbye (LiveKit's `LeaveRequest`) and close the connection.
    Leave,
    /// Fall silent: stop sending and reading, keep every socket open.
    Vanish,
}

/// The signalling connection: LiveKit over WebSocket, or channels to the in-process baseline.
pub enum Link {
    Ws(Box<WebSocketStream<TlsStream<TcpStream>>>),
    Direct {
        id: u64,
        tx: std::sync::mpsc::Sender<Cmd>,
        waker: Arc<mio::Waker>,
        rx: tmpsc::UnboundedReceiver<Resp>,
    },
}

impl Link {
    async fn send(&mut self, msg: Req) -> Result<(), String> {
        match self {
            Link::Ws(ws) => {
                let bytes = lk::SignalRequest { message: Some(msg) }.encode_to_vec();
                ws.send(WsMessage::Binary(bytes.into()))
                    .await
                    .map_err(|e| format!("signal send: {e}"))
            }
            Link::Direct { id, tx, waker, .. } => {
                tx.send(Cmd::Req(*id, Box::new(msg)))
                    .map_err(|_| "baseline gone".to_string())?;
                waker.wake().map_err(|e| e.to_string())
            }
        }
    }

    /// The next response; `None` when the connection ended. Cancel-safe.
    async fn recv(&mut self) -> Option<Resp> {
        match self {
            Link::Ws(ws) => loop {
                match ws.next().await? {
                    Ok(WsMessage::Binary(b)) => {
                        if let Ok(lk::SignalResponse { message: Some(m) }) =
                            lk::SignalResponse::decode(b.as_ref())
                        {
                            return Some(m);
                        }
                    }
                    Ok(WsMessage::Close(_)) | Err(_) => return None,
                    Ok(_) => {}
                }
            },
            Link::Direct { rx, .. } => rx.recv().await,
        }
    }

    async fn close(&mut self) {
        if let Link::Ws(ws) = self {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close()).await;
        }
    }
}

struct Pc {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    timeout: Instant,
    pending: Option<SdpPendingOffer>,
}

impl Pc {
    async fn new(ip: std::net::IpAddr) -> Result<Pc, String> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = Rtc::builder().build(Instant::now());
        let c = Candidate::host(local, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(c);
        Ok(Pc {
            rtc,
            sock,
            local,
            timeout: Instant::now(),
            pending: None,
        })
    }
}

/// Per received stream (subscriber mid): frame numbers seen while measuring.
#[derive(Default)]
struct StreamCount {
    first: Option<u32>,
    last: u32,
    frames: u64,
}

/// Publishing state of one video track.
struct Video {
    mid: Mid,
    pt: Option<Pt>,
    frame: u32,
    /// A keyframe was asked for (PLI) per layer.
    force_key: [bool; 3],
}

pub struct Participant {
    pub identity: String,
    plan: Plan,
    stats: Arc<Stats>,
    link: Link,
    publ: Pc,
    sub: Pc,
    audio_mid: Option<Mid>,
    audio_pt: Option<Pt>,
    audio_frame: u32,
    video: Option<Video>,
    published: usize,
    offered: bool,
    /// Per source (publisher track) received.
    streams: HashMap<u32, StreamCount>,
    /// This participant's source numbers: audio, video.
    source: u32,
    started: Instant,
    got_media: bool,
    /// Others' video tracks, and those whose layer this participant has asked for.
    videos: HashSet<String>,
    asked: HashSet<String>,
}

impl Participant {
    pub async fn new(
        identity: String,
        plan: Plan,
        stats: Arc<Stats>,
        link: Link,
        others: Vec<lk::ParticipantInfo>,
        ip: std::net::IpAddr,
    ) -> Result<Participant, String> {
        let mut p = Participant {
            identity,
            plan,
            stats: stats.clone(),
            link,
            publ: Pc::new(ip).await?,
            sub: Pc::new(ip).await?,
            audio_mid: None,
            audio_pt: None,
            audio_frame: 0,
            video: None,
            published: 0,
            offered: false,
            streams: HashMap::new(),
            source: stats.next_source.fetch_add(2, Ordering::Relaxed),
            started: Instant::now(),
            got_media: false,
            videos: HashSet::new(),
            asked: HashSet::new(),
        };
        p.note_videos(&others);
        Ok(p)
    }

    /// Runs until `stop` turns true (then leaves) or the server ends the session.
    pub async fn run(mut self, mut stop: watch::Receiver<Stop>) -> Result<(), String> {
        self.started = Instant::now();
        self.announce().await?;
        let mut buf_p = vec![0u8; 2048];
        let mut buf_s = vec![0u8; 2048];
        let mut next_audio = Instant::now();
        let mut next_video = next_audio;
        let mut next_ping = next_audio + PING_EVERY;
        let result = loop {
            if *stop.borrow() != Stop::Run {
                break Ok(());
            }
            self.drain(true);
            self.drain(false);
            let publishing = self.offered && self.publ.pending.is_none();
            let mut wake = self.publ.timeout.min(self.sub.timeout).min(next_ping);
            if publishing {
                if self.audio_mid.is_some() {
                    wake = wake.min(next_audio);
                }
                if self.video.is_some() {
                    wake = wake.min(next_video);
                }
            }
            tokio::select! {
                _ = stop.changed() => {}
                m = self.link.recv() => match m {
                    Some(m) => {
                        if let Err(e) = self.on_signal(m).await {
                            break Err(e);
                        }
                    }
                    None => break Err("signalling connection ended".into()),
                },
                r = self.publ.sock.recv_from(&mut buf_p) => {
                    if let Ok((n, from)) = r {
                        self.receive(true, from, &buf_p[..n]);
                        while let Ok((n, from)) = self.publ.sock.try_recv_from(&mut buf_p) {
                            self.receive(true, from, &buf_p[..n]);
                        }
                    }
                }
                r = self.sub.sock.recv_from(&mut buf_s) => {
                    if let Ok((n, from)) = r {
                        self.receive(false, from, &buf_s[..n]);
                        while let Ok((n, from)) = self.sub.sock.try_recv_from(&mut buf_s) {
                            self.receive(false, from, &buf_s[..n]);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            for publisher in [true, false] {
                let pc = if publisher {
                    &mut self.publ
                } else {
                    &mut self.sub
                };
                if pc.timeout <= now {
                    // A failed connection is reported by poll_output in drain().
                    let _ = pc.rtc.handle_input(Input::Timeout(now));
                }
            }
            if publishing {
                while self.audio_mid.is_some() && next_audio <= now {
                    self.send_audio(now);
                    next_audio += AUDIO_EVERY;
                }
                while self.video.is_some() && next_video <= now {
                    self.send_video(now);
                    next_video += VIDEO_EVERY;
                }
            }
            if next_ping <= now {
                next_ping = now + PING_EVERY;
                if let Err(e) = self.link.send(Req::Ping(super::unix_ms())).await {
                    break Err(e);
                }
            }
        };
        self.finish();
        if *stop.borrow() == Stop::Vanish {
            // Gone without a word, as a laptop whose network dropped: no leave, no close, no
            // UDP; the sockets stay open and unread until the run drops this participant.
            while stop.changed().await.is_ok() {}
            return result;
        }
        let _ = self
            .link
            .send(Req::Leave(lk::LeaveRequest {
                can_reconnect: false,
                reason: lk::DisconnectReason::ClientInitiated as i32,
                ..Default::default()
            }))
            .await;
        self.link.close().await;
        result
    }

    /// Adds this participant's frame counts to the totals.
    fn finish(&mut self) {
        let (mut expected, mut received) = (0u64, 0u64);
        for s in self.streams.values() {
            if let Some(first) = s.first {
                expected += u64::from(s.last.wrapping_sub(first)) + 1;
                received += s.frames;
            }
        }
        self.stats
            .frames_expected
            .fetch_add(expected, Ordering::Relaxed);
        self.stats
            .frames_received
            .fetch_add(received, Ordering::Relaxed);
        self.streams.clear();
    }

    /// add_track for what it publishes; the offer follows once the tracks are published.
    async fn announce(&mut self) -> Result<(), String> {
        if self.plan.audio {
            self.link
                .send(Req::AddTrack(lk::AddTrackRequest {
                    cid: "audio".into(),
                    name: "microphone".into(),
                    r#type: lk::TrackType::Audio as i32,
                    source: lk::TrackSource::Microphone as i32,
                    ..Default::default()
                }))
                .await?;
        }
        if self.plan.video {
            let layers = LAYERS
                .iter()
                .map(|(_, q, w, h, b)| lk::VideoLayer {
                    quality: *q,
                    width: *w,
                    height: *h,
                    bitrate: *b,
                    ..Default::default()
                })
                .collect();
            self.link
                .send(Req::AddTrack(lk::AddTrackRequest {
                    cid: "video".into(),
                    name: "camera".into(),
                    r#type: lk::TrackType::Video as i32,
                    source: lk::TrackSource::Camera as i32,
                    width: 1280,
                    height: 720,
                    layers,
                    ..Default::default()
                }))
                .await?;
        }
        Ok(())
    }

    async fn on_signal(&mut self, m: Resp) -> Result<(), String> {
        match m {
            Resp::TrackPublished(_) => {
                self.published += 1;
                let want = usize::from(self.plan.audio) + usize::from(self.plan.video);
                if self.published == want && !self.offered {
                    self.offer().await?;
                }
            }
            Resp::Offer(sd) => {
                let offer = SdpOffer::from_sdp_string(&sd.sdp).map_err(|e| e.to_string())?;
                let answer = self
                    .sub
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| format!("subscriber offer: {e}"))?;
                self.sub.timeout = Instant::now();
                self.link
                    .send(Req::Answer(lk::SessionDescription {
                        r#type: "answer".into(),
                        sdp: answer.to_sdp_string(),
                        id: sd.id,
                        mid_to_track_id: Default::default(),
                    }))
                    .await?;
                self.trickle(false).await?;
                self.ask_layer().await?;
            }
            Resp::Answer(sd) => {
                let Some(pending) = self.publ.pending.take() else {
                    return Ok(());
                };
                let answer = SdpAnswer::from_sdp_string(&sd.sdp).map_err(|e| e.to_string())?;
                self.publ
                    .rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| format!("publisher answer: {e}"))?;
                self.publ.timeout = Instant::now();
                self.bind_payload_types();
            }
            Resp::Trickle(t) => {
                #[derive(serde::Deserialize)]
                struct Init {
                    candidate: String,
                }
                let c = serde_json::from_str::<Init>(&t.candidate_init)
                    .ok()
                    .and_then(|i| {
                        Candidate::from_sdp_string(i.candidate.trim_start_matches("a=")).ok()
                    });
                if let Some(c) = c {
                    let pc = if t.target == lk::SignalTarget::Subscriber as i32 {
                        &mut self.sub
                    } else {
                        &mut self.publ
                    };
                    pc.rtc.add_remote_candidate(c);
                }
            }
            Resp::Update(u) => self.note_videos(&u.participants),
            Resp::Leave(_) => return Err("told to leave".into()),
            _ => {}
        }
        Ok(())
    }

    /// Remembers the others' video tracks.
    fn note_videos(&mut self, participants: &[lk::ParticipantInfo]) {
        let video = lk::TrackType::Video as i32;
        let tracks = participants
            .iter()
            .filter(|p| p.identity != self.identity)
            .flat_map(|p| p.tracks.iter())
            .filter(|t| t.r#type == video);
        self.videos.extend(tracks.map(|t| t.sid.clone()));
    }

    /// Asks for the planned layer of the video tracks not asked yet, as livekit-client does for
    /// a small video element. After an offer from the server, so the subscriptions exist (confab
    /// announces a track before it subscribes anyone to it).
    async fn ask_layer(&mut self) -> Result<(), String> {
        let Some(quality) = self.plan.layer else {
            return Ok(());
        };
        let new: Vec<String> = self.videos.difference(&self.asked).cloned().collect();
        if new.is_empty() {
            return Ok(());
        }
        self.asked.extend(new.iter().cloned());
        self.link
            .send(Req::TrackSetting(lk::UpdateTrackSettings {
                track_sids: new,
                quality,
                ..Default::default()
            }))
            .await
    }

    /// Our host candidate, trickled as livekit-client does (it is in the SDP too).
    async fn trickle(&mut self, publisher: bool) -> Result<(), String> {
        let (local, target) = if publisher {
            (self.publ.local, lk::SignalTarget::Publisher)
        } else {
            (self.sub.local, lk::SignalTarget::Subscriber)
        };
        let Ok(c) = Candidate::host(local, "udp") else {
            return Ok(());
        };
        let init = serde_json::json!({
            "candidate": c.to_sdp_string(),
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        });
        self.link
            .send(Req::Trickle(lk::TrickleRequest {
                candidate_init: init.to_string(),
                target: target as i32,
                ..Default::default()
            }))
            .await
    }

    async fn offer(&mut self) -> Result<(), String> {
        let mut api = self.publ.rtc.sdp_api();
        let stream = Some(self.identity.clone());
        if self.plan.audio {
            let mid = api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                stream.clone(),
                Some("audio".into()),
                None,
            );
            self.audio_mid = Some(mid);
        }
        if self.plan.video {
            let mut sim = Simulcast::new();
            for (rid, ..) in LAYERS {
                sim.add_send_layer(SimulcastLayer::new(rid));
            }
            let mid = api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                stream,
                Some("video".into()),
                Some(sim),
            );
            self.video = Some(Video {
                mid,
                pt: None,
                frame: 0,
                force_key: [true; 3],
            });
        }
        let Some((offer, pending)) = api.apply() else {
            return Ok(());
        };
        self.publ.pending = Some(pending);
        self.offered = true;
        self.link
            .send(Req::Offer(lk::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id: 1,
                mid_to_track_id: Default::default(),
            }))
            .await?;
        self.trickle(true).await
    }

    fn bind_payload_types(&mut self) {
        let pt_of = |rtc: &mut Rtc, mid: Mid, codec: Codec| {
            rtc.writer(mid).and_then(|w| {
                w.payload_params()
                    .find(|p| p.spec().codec == codec)
                    .map(|p| p.pt())
            })
        };
        if let Some(mid) = self.audio_mid {
            self.audio_pt = pt_of(&mut self.publ.rtc, mid, Codec::Opus);
        }
        if let Some(v) = &mut self.video {
            v.pt = pt_of(&mut self.publ.rtc, v.mid, Codec::Vp8);
        }
    }

    fn send_audio(&mut self, now: Instant) {
        let (Some(mid), Some(pt)) = (self.audio_mid, self.audio_pt) else {
            return;
        };
        self.audio_frame = self.audio_frame.wrapping_add(1);
        let mut data = vec![0u8; AUDIO_BYTES];
        stamp(&mut data, 0, self.source, self.audio_frame);
        let time = MediaTime::new(
            u64::from(self.audio_frame) * 960,
            Frequency::FORTY_EIGHT_KHZ,
        );
        if let Some(w) = self.publ.rtc.writer(mid) {
            let w = w.audio_level(-30, true);
            if w.write(pt, now, time, data).is_ok() {
                self.stats.sent_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn send_video(&mut self, now: Instant) {
        let Some(v) = &mut self.video else {
            return;
        };
        let Some(pt) = v.pt else {
            return;
        };
        v.frame = v.frame.wrapping_add(1);
        let periodic = v.frame % KEYFRAME_EVERY == 1;
        let time = MediaTime::new(u64::from(v.frame) * 3000, Frequency::NINETY_KHZ);
        for (i, (rid, _, w, h, bps)) in LAYERS.iter().enumerate() {
            let key = periodic || v.force_key[i];
            v.force_key[i] = false;
            let delta = (*bps / 8 / 30) as usize;
            let size = if key { delta * 4 } else { delta }.max(VIDEO_STAMP_AT + STAMP_LEN);
            let mut data = vec![0u8; size];
            vp8_header(&mut data, key, *w as u16, *h as u16);
            stamp(&mut data, VIDEO_STAMP_AT, self.source + 1, v.frame);
            let Some(writer) = self.publ.rtc.writer(v.mid) else {
                return;
            };
            match writer.rid(Rid::from(*rid)).write(pt, now, time, data) {
                Ok(()) => {
                    self.stats.sent_frames.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats
                        .error(format!("{}: video write: {e}", self.identity));
                }
            }
        }
    }

    fn receive(&mut self, publisher: bool, from: SocketAddr, data: &[u8]) {
        let pc = if publisher {
            &mut self.publ
        } else {
            &mut self.sub
        };
        if !publisher && self.stats.measuring.load(Ordering::Relaxed) {
            self.stats.datagrams.fetch_add(1, Ordering::Relaxed);
            self.stats
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let Ok(r) = Receive::new(Protocol::Udp, from, pc.local, data) else {
            return;
        };
        if pc
            .rtc
            .handle_input(Input::Receive(Instant::now(), r))
            .is_err()
        {
            return;
        }
        self.drain(publisher);
    }

    /// Polls one PeerConnection until only a timeout is left.
    fn drain(&mut self, publisher: bool) {
        loop {
            let pc = if publisher {
                &mut self.publ
            } else {
                &mut self.sub
            };
            match pc.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    pc.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let sent = pc.sock.try_send_to(&t.contents, t.destination).is_ok();
                    if sent && self.stats.measuring.load(Ordering::Relaxed) {
                        self.stats.sent_datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Output::Event(e)) => self.on_event(publisher, e),
                Err(e) => {
                    self.stats
                        .error(format!("{}: rtc failed: {e}", self.identity));
                    pc.timeout = Instant::now() + Duration::from_secs(3600);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, publisher: bool, e: Event) {
        match e {
            Event::MediaData(d) if !publisher => self.on_media(d),
            Event::KeyframeRequest(r) if publisher => {
                if let Some(v) = &mut self.video {
                    match r.rid.as_deref() {
                        Some(rid) => {
                            if let Some(i) = LAYERS.iter().position(|l| l.0 == rid) {
                                v.force_key[i] = true;
                            }
                        }
                        None => v.force_key = [true; 3],
                    }
                }
            }
            _ => {}
        }
    }

    fn on_media(&mut self, d: MediaData) {
        let now = Instant::now();
        if !self.got_media {
            self.got_media = true;
            let ms = now.saturating_duration_since(self.started).as_millis() as u32;
            self.stats.join_ms.lock().map(|mut v| v.push(ms)).ok();
            self.stats.receiving.fetch_add(1, Ordering::Relaxed);
        }
        let packets = (*d.seq_range.end()).wrapping_sub(**d.seq_range.start()) + 1;
        let at = if d.params.spec().codec.is_audio() {
            0
        } else {
            VIDEO_STAMP_AT
        };
        let Some((source, frame, sent_us)) = unstamp(&d.data, at) else {
            return;
        };
        if !self.stats.measuring.load(Ordering::Relaxed) {
            return;
        }
        self.stats.packets.fetch_add(packets, Ordering::Relaxed);
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        let delay = super::clock_us().saturating_sub(sent_us);
        if let Ok(mut v) = self.stats.delays_us.lock() {
            v.push(delay.min(u64::from(u32::MAX)) as u32);
        }
        let s = self.streams.entry(source).or_default();
        match s.first {
            None => {
                s.first = Some(frame);
                s.last = frame;
            }
            Some(first) => {
                // Frames of different simulcast layers may arrive slightly out of order.
                if (frame.wrapping_sub(s.last) as i32) > 0 {
                    s.last = frame;
                }
                if (frame.wrapping_sub(first) as i32) < 0 {
                    s.first = Some(frame);
                }
            }
        }
        s.frames += 1;
    }
}

/// The 10 bytes a VP8 frame starts with: frame tag (P bit clear on keyframes), start code,
/// dimensions.
fn vp8_header(data: &mut [u8], key: bool, w: u16, h: u16) {
    let mut hdr = [0u8; 10];
    hdr[0] = if key { 0x10 } else { 0x11 };
    hdr[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    hdr[6..8].copy_from_slice(&w.to_le_bytes());
    hdr[8..10].copy_from_slice(&h.to_le_bytes());
    if let Some(d) = data.get_mut(..10) {
        d.copy_from_slice(&hdr);
    }
}

fn stamp(data: &mut [u8], at: usize, source: u32, frame: u32) {
    let Some(d) = data.get_mut(at..at + STAMP_LEN) else {
        return;
    };
    d[..2].copy_from_slice(&MAGIC);
    d[2..6].copy_from_slice(&source.to_le_bytes());
    d[6..10].copy_from_slice(&frame.to_le_bytes());
    d[10..18].copy_from_slice(&super::clock_us().to_le_bytes());
}

/// Source, frame number and send time from a received payload, if it carries our stamp.
fn unstamp(data: &[u8], at: usize) -> Option<(u32, u32, u64)> {
    let d = data.get(at..at + STAMP_LEN)?;
    if d[..2] != MAGIC {
        return None;
    }
    let source = u32::from_le_bytes(d[2..6].try_into().ok()?);
    let frame = u32::from_le_bytes(d[6..10].try_into().ok()?);
    let sent = u64::from_le_bytes(d[10..18].try_into().ok()?);
    Some((source, frame, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut d = vec![0u8; 40];
        stamp(&mut d, VIDEO_STAMP_AT, 3, 7);
        let (source, frame, _) = unstamp(&d, VIDEO_STAMP_AT).unwrap_or_default();
        assert_eq!((source, frame), (3, 7));
        assert!(unstamp(&d, 0).is_none());
        assert!(unstamp(&d[..20], VIDEO_STAMP_AT).is_none());
    }
}
