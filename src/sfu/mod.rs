//! The SFU core, sans-IO. Rooms, participants, published tracks and subscriptions, with one str0m
//! `Rtc` per PeerConnection. Input: time, datagrams (with the local address they arrived on),
//! LiveKit signal requests and admin calls. Output ([`Output`]): datagrams to send and signal
//! responses for sessions. No sockets, no threads, no clock: time (monotonic, and wall-clock
//! where LiveKit wants it) comes in as arguments. The media driver
//! (`media/`) feeds it, and the unit tests drive simulated peers through it on a virtual clock.
//!
//! [`Sfu`] coordinates named parts: the room registry (`registry.rs`: rooms, participants,
//! tracks), the peers (`peers.rs`: each PeerConnection's `Rtc` in `peer.rs`, datagram routes,
//! the poll queue), the fan-out of one packet (`fanout.rs`: per-subscription rewriting and
//! gating), a participant's signal requests (`signalling.rs`: [`Sfu::handle_signal`] dispatches
//! to it), subscriptions and v0 negotiation (`subscriptions.rs`), and the admin requests
//! (`admin.rs`: [`Request`]/[`Reply`], [`Sfu::handle`]). Joining and leaving, and the str0m
//! drive loop and event handling that tie them together, are here; the media path is in
//! `forward.rs`, with `sections.rs`, `data.rs` and `quality.rs`.

// LiveKit marks fields deprecated (TrackInfo.layers, UserPacket.participant_identity …) that
// livekit-client 2.23 still reads, so confab keeps filling them.
#![allow(deprecated)]

mod admin;
pub mod counters;
mod data;
pub mod delay;
mod fanout;
mod forward;
pub mod limits;
mod peer;
mod peers;
mod quality;
pub mod record;
mod registry;
pub mod room;
pub mod rtp;
mod sections;
mod signalling;
mod subscriptions;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use str0m::config::DtlsCert;
use str0m::media::{KeyframeRequestKind, MediaKind, Rid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc};
use tracing::{debug, info, warn};

use crate::ids::new_sid;
pub use admin::{Reply, Request};
use forward::Forwarding;
pub use peer::rewrite_answer;
use peer::{Peer, Role};
use peers::Peers;
pub use record::{RecMsg, RecordRefused, RecordSink, RecordStarted, RecordTarget};
use registry::Registry;
pub use room::{Mode, Permissions, RoomSettings};
use room::{Participant, Room};
use sections::Sections;
use signalling::{Answered, Broken, Signalling};
use subscriptions::Subscriptions;

/// A `HashMap` with foldhash: several times cheaper than SipHash for the short keys the packet
/// path looks up (ids, track sids, room names).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Participant key inside the SFU (the LiveKit sid is for the wire).
pub type Pid = u64;
pub type PeerId = u64;

/// The protocol version confab speaks (livekit-client 2.23 speaks 16/17).
pub const PROTOCOL_VERSION: i32 = 17;
/// The LiveKit server version confab answers like. livekit-client switches features on by
/// server version (RPC needs ≥ 1.8.0); confab's own version goes into `node_id`.
pub const LIVEKIT_COMPAT_VERSION: &str = "1.9.0";
const PING_INTERVAL_S: i32 = 5;
const PING_TIMEOUT_S: i32 = 15;
/// A client that does not answer the server's offer within this is disconnected.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(15);
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);
const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);
/// A peer's timer due within this is handled when the peer is polled (the kernel's default
/// timer slack is as much; `epoll_wait` would round the wait up to a millisecond).
const TIMER_SLACK: Duration = Duration::from_micros(50);
/// At most this many timers are handled in one poll of a peer; the rest on the next turn.
const MAX_TIMEOUTS_IN_PLACE: u32 = 64;
/// Audio quieter than this (linear, 0..1) does not make an active speaker (≈ -48 dBov).
const SPEAKER_THRESHOLD: f32 = 0.004;

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Host candidates: every local address a UDP socket is bound on, and the ICE-TCP addresses.
    pub candidates: Vec<(SocketAddr, Protocol)>,
    /// Also advertised, on the same ports: the public address of a host behind 1:1 NAT
    /// (`rtc.node_ip`). Checks sent to it arrive on a bound address, which answers them.
    pub advertised_ip: Option<std::net::IpAddr>,
    pub max_participants: u32,
    pub max_rooms: u32,
    pub empty_timeout: Duration,
    /// How long a participant whose signal connection dropped is kept for a resume
    /// (`reconnect=1&sid=`); its media keeps flowing meanwhile.
    pub departure_timeout: Duration,
    pub node_id: String,
    pub version: String,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            candidates: vec![],
            advertised_ip: None,
            max_participants: 100,
            max_rooms: 100,
            empty_timeout: Duration::from_secs(300),
            departure_timeout: Duration::from_secs(20),
            node_id: "confab".into(),
            version: crate::version::VERSION.into(),
        }
    }
}

/// What a join asks for (the token's claims, already verified).
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub perms: Permissions,
    pub can_update_metadata: bool,
    pub mode: Mode,
    pub auto_subscribe: bool,
    pub client_protocol: i32,
    /// `reconnect=1&sid=PA_…` (v0) or `JoinRequest.reconnect` (v1): resume this participant.
    pub resume_sid: Option<String>,
    /// The token's participant kind (`kind: "agent"`, or the `agent` grant).
    pub kind: lk::participant_info::Kind,
    /// The token's `roomConfig`: applies if this join creates the room.
    pub room_settings: RoomSettings,
    /// TURN servers and credentials for this participant (the embedded TURN server's), handed
    /// over in the join (and reconnect) response.
    pub ice_servers: Vec<lk::IceServer>,
}

#[cfg(test)]
impl JoinParams {
    /// A join with default permissions, for tests of the SFU and of the media threads.
    pub(crate) fn for_test(room: &str, identity: &str, mode: Mode, client_protocol: i32) -> Self {
        JoinParams {
            room: room.into(),
            identity: identity.into(),
            name: identity.into(),
            metadata: String::new(),
            attributes: HashMap::new(),
            perms: Permissions::default(),
            can_update_metadata: false,
            mode,
            auto_subscribe: true,
            client_protocol,
            resume_sid: None,
            kind: lk::participant_info::Kind::Standard,
            room_settings: RoomSettings::default(),
            ice_servers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("participant {0} is not here any more; join again")]
    CannotResume(String),
    #[error("room {0:?} is full ({1} participants)")]
    RoomFull(String, u32),
    #[error("this server already hosts its maximum of {0} rooms")]
    TooManyRooms(u32),
    #[error("cannot set up the media connection: {0}")]
    Rtc(String),
}

/// Published tracks and subscriptions (a subscriber given a track, negotiated or not yet) of
/// one SFU, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    pub published_audio: u64,
    pub published_video: u64,
    pub subscribed_audio: u64,
    pub subscribed_video: u64,
}

/// Something for the IO side to do.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram (UDP) or an RFC 4571 frame (ICE-TCP).
    Transmit(Transmit),
    /// Send a signal response to a participant's session.
    Signal(Pid, Box<Resp>),
    /// End a participant's session: send `leave` with this reason (unless the client left
    /// itself: `ClientInitiated`), then close.
    Close(Pid, lk::DisconnectReason),
    /// Something happened that webhooks, agents and metrics hear about (`events.rs`).
    Event(Box<crate::events::Event>),
    /// For the record service: a recorded packet, or what happened to a recording (record.rs).
    Record(Box<RecMsg>),
}

/// Retransmission history per forwarded video stream (RTX, answering the subscriber's NACKs).
/// In RTP mode an entry is a ≈ 420-byte packet header plus a share of the payload (payloads
/// are shared by every subscriber of a layer, kept until the last history drops them); the
/// histories are the largest part of a meeting participant's memory that confab decides
/// (docs/performance.md). At most RTX_PACKETS (str0m's default: 1000), ≈ 0.7 s of the
/// 1.5 Mbit/s layer …
pub(crate) const RTX_PACKETS: usize = 128;
/// … and packets no older than RTX_AGE (str0m's default: 3 s). str0m grows a stream's history
/// (from 10 entries) only as far as its rate needs for this age, so lower layers keep far
/// fewer packets. libwebrtc's sender keeps max(1 s, 3 × RTT); a NACK for an older packet asks
/// for a frame the receiver's jitter buffer has given up on.
pub(crate) const RTX_AGE: Duration = Duration::from_secs(1);
/// Stop resending when retransmissions exceed this share of what is sent (str0m's default).
pub(crate) const RTX_RATIO_CAP: Option<f32> = Some(0.15);

pub struct Sfu {
    cfg: SfuConfig,
    dtls_cert: Option<DtlsCert>,
    /// Rooms, participants, published tracks (registry.rs).
    reg: Registry,
    /// The PeerConnections, their routes, and which are to be polled (peers.rs).
    peers: Peers,
    out: VecDeque<Output>,
    next_id: u64,
    next_speakers: Option<Instant>,
    /// The time of the latest input (for steps that happen inside a call, like an offer).
    now: Instant,
    /// v1: the receive-only sections asked for and offered (sections.rs).
    sections: Sections,
    /// Connection quality per participant (quality.rs).
    quality: quality::QualityState,
    /// Events polled from a peer, reused across `drive` rounds.
    events: Vec<Event>,
    /// RTP counters from str0m's stream statistics (counters.rs), read by `/metrics`.
    counters: std::sync::Arc<counters::RtpCounters>,
    /// When the datagram being received reached the kernel (set by the media loop).
    arrival: Option<Instant>,
    /// Forwarded packets whose delay through confab is being measured (delay.rs).
    probe: delay::DelayProbe,
    /// The recordings' taps on published tracks (record.rs).
    taps: record::Taps,
}

impl Sfu {
    /// An SFU whose clock starts at `now` (the media loop's, or a test's virtual clock).
    pub fn new(cfg: SfuConfig, now: Instant) -> Sfu {
        let dtls_cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate();
        Sfu {
            cfg,
            dtls_cert,
            reg: Registry::default(),
            peers: Peers::default(),
            out: VecDeque::new(),
            next_id: 1,
            next_speakers: None,
            now,
            sections: Sections::default(),
            quality: Default::default(),
            events: Vec::new(),
            counters: Default::default(),
            arrival: None,
            probe: delay::DelayProbe::default(),
            taps: record::Taps::default(),
        }
    }

    /// The next datagram given to [`Sfu::receive`] reached the kernel at `at` (before `now`:
    /// it waited in the socket). Its forwarded copies are measured from then.
    pub fn set_arrival(&mut self, at: Instant) {
        self.arrival = Some(at);
    }

    /// Whether forwarded packets are being measured (then [`Sfu::probe_sent`] wants to see
    /// outgoing datagrams).
    pub fn probing(&self) -> bool {
        !self.probe.is_idle()
    }

    /// An outgoing datagram is being sent: when the packet it forwards arrived (and whether it
    /// is audio), if it was measured.
    pub fn probe_sent(&mut self, datagram: &[u8]) -> Option<delay::Probe> {
        self.probe.sent(datagram)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        // Peers that packets were forwarded to are polled here, once for a whole batch of
        // received datagrams (`receive` polls only the receiving peer), and one at a time: what
        // waits to be sent is one peer's output, not the whole batch's fan-out (which held
        // megabytes of datagrams at once in a large webinar).
        let now = self.now;
        self.drive_until(now, |sfu| !sfu.out.is_empty());
        self.out.pop_front()
    }

    /// The media path's parts, borrowed together (forward.rs).
    fn forwarding(&mut self) -> Forwarding<'_> {
        Forwarding {
            reg: &mut self.reg,
            peers: &mut self.peers,
            probe: &mut self.probe,
            arrival: self.arrival,
            taps: &mut self.taps,
            out: &mut self.out,
        }
    }

    fn signal(&mut self, pid: Pid, msg: Resp) {
        self.out.push_back(Output::Signal(pid, Box::new(msg)));
    }

    /// v1: asks the client for the receive-only sections still missing (all, if `force`).
    fn request_sections(&mut self, pid: Pid, force: bool) {
        self.subscriptions().request_sections(pid, force);
    }

    /// The parts subscriptions work on, borrowed together (subscriptions.rs).
    fn subscriptions(&mut self) -> Subscriptions<'_> {
        Subscriptions {
            reg: &mut self.reg,
            peers: &mut self.peers,
            sections: &mut self.sections,
            out: &mut self.out,
            probe: &mut self.probe,
            arrival: self.arrival,
            taps: &mut self.taps,
            now: self.now,
        }
    }

    /// The earliest instant [`Sfu::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.peers.any_dirty() {
            // Output is waiting to be polled (`poll_output` was not drained): due now.
            return Some(self.now);
        }
        let peers = self.peers.next_timeout();
        let rooms = self
            .reg
            .rooms
            .values()
            .filter_map(|r| r.empty_since.map(|t| t + self.cfg.empty_timeout))
            .min();
        let gone = self
            .reg
            .parts
            .values()
            .filter_map(|p| p.gone_since.map(|t| t + p.departure_timeout))
            .min();
        let offers = self.peers.next_offer_timeout(OFFER_TIMEOUT);
        let quality = self.quality.next();
        [peers, rooms, gone, offers, self.next_speakers, quality]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.reg.rooms.keys().map(String::as_str)
    }

    pub fn participant_count(&self) -> usize {
        self.reg.parts.len()
    }

    /// The RTP counters of this SFU (counters.rs), to read from another thread.
    pub fn rtp_counters(&self) -> std::sync::Arc<counters::RtpCounters> {
        self.counters.clone()
    }

    /// Published tracks and subscriptions by kind (`/metrics`): one pass over the registry.
    pub fn census(&self) -> Census {
        let mut c = Census::default();
        for t in self.reg.tracks.values() {
            match t.kind {
                MediaKind::Audio => c.published_audio += 1,
                MediaKind::Video => c.published_video += 1,
            }
        }
        for p in self.reg.parts.values() {
            for sub in p.subs.values() {
                match self.reg.tracks.get(&sub.track).map(|t| t.kind) {
                    Some(MediaKind::Audio) => c.subscribed_audio += 1,
                    Some(MediaKind::Video) => c.subscribed_video += 1,
                    None => {}
                }
            }
        }
        c
    }

    // ---------------------------------------------------------------- joining and leaving

    /// A participant joins. On success its `join` response is queued for it, and the others in
    /// the room hear about it. With `resume_sid`, a participant whose signal connection dropped
    /// takes it up again instead (`reconnect` response; the room sees nothing).
    /// `unix_ms` is the wall-clock time of the join (LiveKit's `joined_at`).
    pub fn join(
        &mut self,
        now: Instant,
        unix_ms: i64,
        p: JoinParams,
    ) -> Result<(Pid, String), JoinError> {
        self.now = now;
        if let Some(sid) = &p.resume_sid {
            return self.resume(now, sid, &p);
        }
        // Duplicate identity: the newer session wins, as in LiveKit.
        let dup = self
            .reg
            .parts
            .values()
            .find(|x| x.room == p.room && x.identity == p.identity)
            .map(|x| x.id);
        if let Some(old) = dup {
            info!(identity = %p.identity, room = %p.room, "duplicate identity: the older session is removed");
            self.remove_participant(now, old, lk::DisconnectReason::DuplicateIdentity);
        }
        if !self.reg.rooms.contains_key(&p.room) {
            self.create_room(now, unix_ms, &p.room, &p.room_settings)?;
        }
        let room = self
            .reg
            .rooms
            .get(&p.room)
            .ok_or_else(|| JoinError::Rtc("room vanished".into()))?;
        let present = room
            .participants
            .iter()
            .filter(|x| self.reg.parts.get(x).is_some_and(|x| !x.perms.hidden))
            .count() as u32;
        if !p.perms.hidden && room.max_participants > 0 && present >= room.max_participants {
            return Err(JoinError::RoomFull(p.room.clone(), room.max_participants));
        }
        let departure_timeout = Duration::from_secs(room.departure_timeout_s as u64);
        let pid = self.id();
        let sid = new_sid("PA_");
        let (publisher, subscriber) = match p.mode {
            Mode::V0 => {
                let a = self.new_peer(now, pid, Role::Publisher)?;
                let b = self.new_peer(now, pid, Role::Subscriber)?;
                (a, b)
            }
            Mode::V1 => {
                let a = self.new_peer(now, pid, Role::Single)?;
                (a, a)
            }
        };
        let part = Participant {
            id: pid,
            sid: sid.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            metadata: p.metadata.clone(),
            attributes: p.attributes.clone(),
            room: p.room.clone(),
            perms: p.perms,
            mode: p.mode,
            joined_unix_ms: unix_ms,
            version: 1,
            state: lk::participant_info::State::Joined,
            auto_subscribe: p.auto_subscribe,
            publisher,
            subscriber,
            tracks: vec![],
            subs: Default::default(),
            unsubscribed: HashSet::new(),
            limit_logged: false,
            gone_since: None,
            audio_level: 0.0,
            last_audio: None,
            client_protocol: p.client_protocol,
            egress_estimate: None,
            egress_applied: None,
            can_update_metadata: p.can_update_metadata,
            kind: p.kind,
            departure_timeout,
        };
        self.reg.parts.insert(pid, part);
        if let Some(room) = self.reg.rooms.get_mut(&p.room) {
            room.participants.push(pid);
            room.empty_since = None;
        }
        info!(room = %p.room, identity = %p.identity, %sid, mode = ?p.mode, "participant joined");
        let mut join = self.join_response(pid);
        join.ice_servers = p.ice_servers;
        self.signal(pid, Resp::Join(join));
        self.broadcast_participant(pid);
        self.subscriptions().subscribe_to_published(pid);
        if p.mode == Mode::V0 {
            // The server offers the subscriber PC right away (subscriber primary), with the two
            // data channels livekit-client expects there.
            self.subscriptions().negotiate(subscriber);
        } else {
            self.request_sections(pid, false);
        }
        self.drive(now);
        Ok((pid, sid))
    }

    fn resume(
        &mut self,
        now: Instant,
        sid: &str,
        p: &JoinParams,
    ) -> Result<(Pid, String), JoinError> {
        let Some(part) = self
            .reg
            .parts
            .values_mut()
            .find(|x| x.sid == sid && x.identity == p.identity && x.room == p.room)
        else {
            return Err(JoinError::CannotResume(sid.to_string()));
        };
        part.gone_since = None;
        let pid = part.id;
        info!(identity = %part.identity, %sid, "participant resumed its session");
        let resp = lk::ReconnectResponse {
            server_info: Some(self.server_info()),
            ice_servers: p.ice_servers.clone(),
            ..Default::default()
        };
        self.signal(pid, Resp::Reconnect(resp));
        // What changed while the session was away.
        let room = self
            .reg
            .parts
            .get(&pid)
            .map(|x| x.room.clone())
            .unwrap_or_default();
        let others: Vec<lk::ParticipantInfo> = self
            .reg
            .members(&room)
            .iter()
            .filter(|x| **x != pid)
            .filter_map(|x| self.reg.parts.get(x))
            .filter(|x| !x.perms.hidden)
            .map(|x| x.info(&self.reg.tracks))
            .collect();
        if !others.is_empty() {
            self.signal(
                pid,
                Resp::Update(lk::ParticipantUpdate {
                    participants: others,
                }),
            );
        }
        self.drive(now);
        Ok((pid, sid.to_string()))
    }

    fn new_peer(&mut self, now: Instant, owner: Pid, role: Role) -> Result<PeerId, JoinError> {
        let mut b = Rtc::builder()
            .set_ice_lite(true)
            // RTP mode: packets are forwarded as they come (forward.rs), not depacketised into
            // frames and packetised again for every subscriber.
            .set_rtp_mode(true)
            .enable_bwe(Some(str0m::bwe::Bitrate::kbps(1_500)))
            .set_stats_interval(Some(quality::STATS_INTERVAL));
        if let Some(cert) = &self.dtls_cert {
            b = b.set_dtls_cert(cert.clone());
        }
        // RTX history per outgoing video stream, at most RTX_PACKETS (str0m's default: 1000).
        b = b.set_send_buffer_video(RTX_PACKETS);
        let mut rtc = b.build(now);
        for (addr, proto) in &self.cfg.candidates {
            let c = match proto {
                Protocol::Tcp => Candidate::builder()
                    .tcp()
                    .host(*addr)
                    .tcptype(str0m::net::TcpType::Passive)
                    .build(),
                _ => Candidate::host(*addr, "udp"),
            };
            match c {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => debug!(%addr, "candidate skipped: {e}"),
            }
        }
        let id = self.id();
        self.peers.insert(id, Peer::new(rtc, owner, role, now));
        Ok(id)
    }

    fn server_info(&self) -> lk::ServerInfo {
        lk::ServerInfo {
            edition: 0,
            version: LIVEKIT_COMPAT_VERSION.into(),
            protocol: PROTOCOL_VERSION,
            node_id: format!("{}-{}", self.cfg.node_id, self.cfg.version),
            ..Default::default()
        }
    }

    fn join_response(&self, pid: Pid) -> lk::JoinResponse {
        let Some(part) = self.reg.parts.get(&pid) else {
            return lk::JoinResponse::default();
        };
        let room = self.reg.rooms.get(&part.room);
        let others = room
            .map(|r| {
                r.participants
                    .iter()
                    .filter(|x| **x != pid)
                    .filter_map(|x| self.reg.parts.get(x))
                    .filter(|x| !x.perms.hidden && x.gone_since.is_none())
                    .map(|x| x.info(&self.reg.tracks))
                    .collect()
            })
            .unwrap_or_default();
        lk::JoinResponse {
            room: room.map(|r| self.reg.room_info(r)),
            participant: Some(part.info(&self.reg.tracks)),
            other_participants: others,
            server_version: LIVEKIT_COMPAT_VERSION.into(),
            subscriber_primary: part.mode == Mode::V0 && part.perms.can_subscribe,
            ping_timeout: PING_TIMEOUT_S,
            ping_interval: PING_INTERVAL_S,
            server_info: Some(self.server_info()),
            ..Default::default()
        }
    }

    /// The session of a participant ended without `leave` (socket closed): keep it for a
    /// resume until the departure timeout.
    pub fn session_lost(&mut self, now: Instant, pid: Pid) {
        if let Some(p) = self.reg.parts.get_mut(&pid) {
            info!(identity = %p.identity, "signal connection lost; kept for a resume");
            p.gone_since = Some(now);
        }
    }

    /// Removes a participant: its peers, its tracks, its subscriptions; tells the room, and ends
    /// its session (with `leave` and the reason, unless it left itself).
    pub fn remove_participant(&mut self, now: Instant, pid: Pid, reason: lk::DisconnectReason) {
        // Its recordings end first (while the room still lists it).
        if let Some(room) = self.reg.parts.get(&pid).map(|p| p.room.clone()) {
            self.recorded_participant_gone(pid, &room);
        }
        let Some(mut part) = self.reg.parts.remove(&pid) else {
            return;
        };
        info!(identity = %part.identity, room = %part.room, ?reason, "participant left");
        // LiveKit's participant_joined came when it connected; one that never did aborted.
        let event = if part.state == lk::participant_info::State::Joined {
            crate::events::PARTICIPANT_CONNECTION_ABORTED
        } else {
            crate::events::PARTICIPANT_LEFT
        };
        // The session ends either way; a client that left itself is not sent `leave`.
        self.out.push_back(Output::Close(pid, reason));

        for peer_id in [part.publisher, part.subscriber] {
            if let Some(mut peer) = self.peers.remove(&peer_id) {
                peer.rtc.disconnect();
            }
        }
        self.sections.forget(pid);
        let owner = part.info(&self.reg.tracks);
        let tracks = std::mem::take(&mut part.tracks);
        for t in &tracks {
            self.subscriptions()
                .unpublish(t, Some((owner.clone(), part.room.as_str())));
        }
        part.state = lk::participant_info::State::Disconnected;
        part.version += 1;
        if let Some(room) = self.reg.rooms.get_mut(&part.room) {
            room.participants.retain(|x| *x != pid);
            if room.participants.is_empty() {
                room.empty_since = Some(now);
            }
        }
        if !part.perms.hidden {
            let mut info = part.info(&self.reg.tracks);
            info.disconnect_reason = reason as i32;
            let update = Resp::Update(lk::ParticipantUpdate {
                participants: vec![info],
            });
            for other in self.reg.members(&part.room) {
                self.signal(other, update.clone());
            }
        }
        let mut info = part.info(&self.reg.tracks);
        info.disconnect_reason = reason as i32;
        self.out
            .push_back(self.reg.event(event, &part.room, Some(info), None));
        self.drive(now);
    }

    // ---------------------------------------------------------------- signal requests

    /// The parts signal requests work on, borrowed together (signalling.rs).
    fn signalling(&mut self) -> Signalling<'_> {
        Signalling {
            reg: &mut self.reg,
            peers: &mut self.peers,
            sections: &mut self.sections,
            out: &mut self.out,
        }
    }

    /// A signal request from `pid`'s session: handled by [`Signalling`], and what it sets off
    /// in the other parts done here.
    pub fn handle_signal(&mut self, now: Instant, pid: Pid, msg: Req) {
        self.now = now;
        let Some(part) = self.reg.parts.get(&pid) else {
            return;
        };
        let (publisher, subscriber, mode) = (part.publisher, part.subscriber, part.mode);
        match msg {
            Req::Offer(sd) => match self.signalling().accept_offer(pid, publisher, &sd) {
                Ok(Some(answer)) => {
                    // Learn the new media sections (published tracks, v1 receive slots)
                    // before answering.
                    self.drive(now);
                    self.signalling().send_answer(pid, sd.id, answer);
                    // Subscriptions that were waiting for sections can start now.
                    self.forwarding().request_keyframes_for_new_subs(now, pid);
                }
                Ok(None) => {}
                Err(Broken) => {
                    self.remove_participant(now, pid, lk::DisconnectReason::StateMismatch);
                }
            },
            Req::Answer(sd) => match self.signalling().accept_answer(subscriber, &sd) {
                Answered::Accepted(owner) => {
                    self.forwarding().request_keyframes_for_new_subs(now, owner);
                    if self.peers.get(&subscriber).is_some_and(|p| p.renegotiate) {
                        self.subscriptions().negotiate(subscriber);
                    }
                }
                Answered::Broken(owner) => {
                    self.remove_participant(now, owner, lk::DisconnectReason::StateMismatch);
                }
                Answered::Ignored => {}
            },
            Req::Trickle(t) => {
                let peer = match (mode, lk::SignalTarget::try_from(t.target)) {
                    (Mode::V0, Ok(lk::SignalTarget::Subscriber)) => subscriber,
                    _ => publisher,
                };
                self.signalling().trickle(peer, &t.candidate_init);
            }
            Req::AddTrack(t) => {
                let before = self.reg.parts.get(&pid).map_or(0, |p| p.tracks.len());
                self.signalling().add_track(pid, t);
                let added = self
                    .reg
                    .parts
                    .get(&pid)
                    .filter(|p| p.tracks.len() > before)
                    .and_then(|p| p.tracks.last().cloned());
                if let Some(sid) = added {
                    self.auto_record_track(now, pid, &sid);
                }
            }
            Req::Mute(m) => {
                if self.reg.tracks.get(&m.sid).is_some_and(|t| t.owner == pid) {
                    self.set_muted(&m.sid, m.muted);
                }
            }
            Req::Subscription(s) => {
                let (subscribe, tracks) = self.signalling().subscription(pid, s);
                for t in &tracks {
                    if subscribe {
                        self.subscriptions().subscribe(pid, t);
                    } else {
                        self.subscriptions().unsubscribe(pid, t);
                    }
                }
            }
            Req::TrackSetting(s) => {
                if self.signalling().track_settings(pid, s) {
                    self.forwarding().rebalance(pid);
                }
            }
            Req::Leave(_) => {
                self.remove_participant(now, pid, lk::DisconnectReason::ClientInitiated);
                return;
            }
            Req::UpdateMetadata(m) => {
                if let Some(u) = self.signalling().update_metadata(pid, m) {
                    self.update_participant(pid, u.metadata, u.name, u.attributes, None);
                }
            }
            Req::Ping(_) | Req::PingReq(_) => {} // answered by the session
            other => debug!(request = ?std::mem::discriminant(&other), "signal request ignored"),
        }
        self.drive(now);
    }

    // ---------------------------------------------------------------- participant updates

    /// Tells the others in the room what changed about `pid` (unless it is hidden).
    fn broadcast_participant(&mut self, pid: Pid) {
        self.signalling().broadcast_participant(pid);
    }

    // ---------------------------------------------------------------- network input

    /// A datagram (or ICE-TCP frame) from `source` arrived on local address `destination`.
    pub fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        self.now = now;
        let arrived = self.arrival.take();
        let Ok(recv) = Receive::new(proto, source, destination, buf) else {
            debug!(%source, len = buf.len(), "datagram that is not STUN, DTLS or RTP ignored");
            return;
        };
        let input = Input::Receive(now, recv);
        let key = (proto, source, destination);
        let peer_id = self.peers.route(key, &input);
        let Some(peer_id) = peer_id else {
            debug!(%source, "datagram from an unknown peer ignored");
            return;
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if let Err(e) = peer.rtc.handle_input(input) {
            let owner = peer.owner;
            warn!(%source, "media connection failed: {e}");
            self.remove_participant(now, owner, lk::DisconnectReason::StateMismatch);
            return;
        }
        // The receiving peer is polled now: in RTP mode str0m holds one received packet until
        // it is polled. The peers it forwards to are polled when the output is asked for.
        self.arrival = arrived;
        self.poll_peer(now, peer_id);
        self.arrival = None;
    }

    /// Lets time pass: str0m timers, empty rooms, departed participants, speaker updates.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let due = self.peers.due(now);
        for id in due {
            if let Some(peer) = self.peers.get_mut(&id) {
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    warn!("media connection failed: {e}");
                    let owner = peer.owner;
                    self.remove_participant(now, owner, lk::DisconnectReason::StateMismatch);
                    continue;
                }
                self.peers.mark(id);
            }
        }
        let unanswered = self.peers.unanswered(now, OFFER_TIMEOUT);
        for pid in unanswered {
            if let Some(p) = self.reg.parts.get(&pid) {
                warn!(identity = %p.identity, "no answer to the server's offer within {}s; disconnected", OFFER_TIMEOUT.as_secs());
            }
            self.remove_participant(now, pid, lk::DisconnectReason::StateMismatch);
        }
        let gone: Vec<Pid> = self
            .reg
            .parts
            .values()
            .filter(|p| {
                p.gone_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= p.departure_timeout)
            })
            .map(|p| p.id)
            .collect();
        for pid in gone {
            self.remove_participant(now, pid, lk::DisconnectReason::ConnectionTimeout);
        }
        let closing: Vec<String> = self
            .reg
            .rooms
            .values()
            .filter(|r| {
                r.participants.is_empty()
                    && r.empty_since.is_some_and(|t| {
                        now.saturating_duration_since(t)
                            >= Duration::from_secs(r.empty_timeout_s as u64)
                    })
            })
            .map(|r| r.name.clone())
            .collect();
        for name in closing {
            info!(room = %name, "empty room closed");
            self.close_room(&name);
        }
        if self.next_speakers.is_none_or(|t| t <= now) {
            for (pid, msg) in self.forwarding().speakers(now) {
                self.signal(pid, msg);
            }
            self.next_speakers = Some(now + SPEAKER_INTERVAL);
        }
        for (pid, msg) in self.quality.updates(now, &self.reg, &self.peers) {
            self.signal(pid, msg);
        }
        // The peers that are due are polled by `poll_output`, one at a time.
    }

    // ---------------------------------------------------------------- driving str0m

    /// Polls every peer that got input until it only has a timeout left; handles its events
    /// (which may feed other peers, which are then polled too).
    fn drive(&mut self, now: Instant) {
        self.drive_until(now, |_| false);
    }

    /// Polls dirty peers, one at a time, until none is left or `enough` says so.
    fn drive_until(&mut self, now: Instant, enough: impl Fn(&Sfu) -> bool) {
        let mut rounds = 0;
        while !enough(self) {
            let Some(id) = self.peers.next_dirty() else {
                break;
            };
            rounds += 1;
            if rounds > 10_000 {
                warn!("media loop did not settle; continuing next turn");
                break;
            }
            self.poll_peer(now, id);
        }
    }

    /// Polls one peer until it only has a timeout left, and handles its events (which may make
    /// other peers dirty).
    fn poll_peer(&mut self, now: Instant, id: PeerId) {
        // One buffer for the events of every round (a packet is an event in RTP mode).
        let mut events = std::mem::take(&mut self.events);
        {
            let Some(peer) = self.peers.get_mut(&id) else {
                self.events = events;
                return;
            };
            let mut handled = 0;
            let failed = loop {
                match peer.rtc.poll_output() {
                    Ok(str0m::Output::Transmit(t)) => self.out.push_back(Output::Transmit(t)),
                    // A timer that is already due (str0m's pacer asks for one after every
                    // packet it releases) is handled here rather than on the next turn of the
                    // media loop, which would scan every peer and wait in `epoll_wait` first.
                    Ok(str0m::Output::Timeout(t))
                        if handled < MAX_TIMEOUTS_IN_PLACE && t <= now + TIMER_SLACK =>
                    {
                        handled += 1;
                        if let Err(e) = peer.rtc.handle_input(Input::Timeout(t.max(now))) {
                            break Some(e);
                        }
                    }
                    Ok(str0m::Output::Timeout(t)) => {
                        peer.timeout = t;
                        break None;
                    }
                    Ok(str0m::Output::Event(e)) => events.push(e),
                    Err(e) => break Some(e),
                }
            };
            if let Some(e) = failed {
                warn!("media connection failed: {e}");
                events.clear();
                peer.timeout = now;
                let owner = peer.owner;
                self.remove_participant(now, owner, lk::DisconnectReason::StateMismatch);
            }
        }
        for e in events.drain(..) {
            self.on_event(now, id, e);
        }
        self.events = events;
    }

    /// A participant's first connection is up: the room hears it (LiveKit's `ACTIVE`), and so
    /// do the event sinks (`participant_joined`).
    fn became_active(&mut self, pid: Pid) {
        let Some(p) = self.reg.parts.get_mut(&pid) else {
            return;
        };
        if p.state == lk::participant_info::State::Active {
            return;
        }
        p.state = lk::participant_info::State::Active;
        p.version += 1;
        let room = p.room.clone();
        self.broadcast_participant(pid);
        let info = self.reg.participant_info(pid);
        let event = crate::events::PARTICIPANT_JOINED;
        self.out.push_back(self.reg.event(event, &room, info, None));
        if self.taps.auto.contains_key(&room) {
            let now = self.now;
            self.auto_record_participant(now, pid);
        }
    }

    /// The events `on_event` leaves: str0m's statistics of a peer go to its connection quality
    /// (quality.rs) and the RTP counters (counters.rs); the rest are ignored.
    fn on_stats(&mut self, peer_id: PeerId, e: &Event) {
        let stats = matches!(
            e,
            Event::PeerStats(_) | Event::MediaIngressStats(_) | Event::MediaEgressStats(_)
        );
        let Some(peer) = self.peers.get_mut(&peer_id).filter(|_| stats) else {
            return;
        };
        match e {
            Event::PeerStats(s) => self.quality.record(peer.owner, s),
            Event::MediaIngressStats(s) => self.counters.ingress(&mut peer.stats_seen, s),
            Event::MediaEgressStats(s) => self.counters.egress(&mut peer.stats_seen, s),
            _ => {}
        }
    }

    /// An RTCP sender report from a publisher: for the recordings of its track (lip sync).
    fn on_sender_report(&mut self, peer_id: PeerId, f: &str0m::media::SenderFeedback) {
        let Some(pid) = self.peers.get(&peer_id).map(|p| p.owner) else {
            return;
        };
        let track = self.reg.parts.get(&pid).and_then(|p| {
            p.tracks
                .iter()
                .filter_map(|t| self.reg.tracks.get(t))
                .find(|t| t.mid == Some(f.mid))
        });
        if let Some(t) = track {
            self.taps
                .sender_report(pid, t, f.rid, &f.sender_info, &mut self.out);
        }
    }

    fn on_event(&mut self, now: Instant, peer_id: PeerId, e: Event) {
        match e {
            Event::Connected => {
                let Some(peer) = self.peers.get_mut(&peer_id) else {
                    return;
                };
                peer.connected = true;
                // A fresh allowance of candidates for ICE restarts.
                peer.candidates = 0;
                let pid = peer.owner;
                self.became_active(pid);
                self.forwarding().request_keyframes_for_new_subs(now, pid);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                debug!("ICE disconnected");
            }
            Event::MediaAdded(m) => {
                let rids = m
                    .simulcast
                    .map(|s| {
                        let layers = if s.recv.is_empty() { s.send } else { s.recv };
                        layers.into_iter().map(|l| l.rid).collect()
                    })
                    .unwrap_or_default();
                self.subscriptions()
                    .on_media_added(peer_id, m.mid, m.kind, m.direction, rids)
            }
            Event::RtpPacket(p) => self.forwarding().on_rtp_packet(now, peer_id, p),
            Event::SenderFeedback(f) if !self.taps.is_empty() => self.on_sender_report(peer_id, &f),
            Event::MediaChanged(m) if !m.direction.is_receiving() => {
                // A browser unpublishes by stopping its sender and offering again: the section
                // stops sending to us. There is no signal message for it.
                let Some(pid) = self.peers.get(&peer_id).map(|p| p.owner) else {
                    return;
                };
                let track = self.reg.parts.get(&pid).and_then(|p| {
                    p.tracks
                        .iter()
                        .find(|t| {
                            self.reg
                                .tracks
                                .get(*t)
                                .is_some_and(|t| t.mid == Some(m.mid))
                        })
                        .cloned()
                });
                if let Some(track) = track {
                    info!(%track, "track unpublished");
                    self.recorded_track_gone(pid, &track);
                    self.subscriptions().unpublish(&track, None);
                    if let Some(p) = self.reg.parts.get_mut(&pid) {
                        p.tracks.retain(|t| *t != track);
                        p.version += 1;
                    }
                    self.broadcast_participant(pid);
                }
            }
            Event::KeyframeRequest(r) => {
                let Some(pid) = self.peers.get(&peer_id).map(|p| p.owner) else {
                    return;
                };
                let found = self.reg.parts.get(&pid).and_then(|p| {
                    p.subs
                        .values()
                        .find(|s| s.mid == Some(r.mid))
                        .map(|s| (s.track.clone(), s.current))
                });
                if let Some((track, rid)) = found {
                    self.forwarding().request_keyframe(now, &track, rid);
                }
            }
            Event::ChannelOpen(id, label) => {
                if let Some(peer) = self.peers.get_mut(&peer_id) {
                    match label.as_str() {
                        "_reliable" => peer.reliable = Some(id),
                        "_lossy" => peer.lossy = Some(id),
                        _ => {}
                    }
                }
            }
            Event::ChannelData(d) => match data::incoming(&self.reg, &self.peers, peer_id, &d) {
                data::Incoming::Deliver { from, room, packet } => {
                    data::deliver(&self.reg, &mut self.peers, Some(from), &room, &packet)
                }
                data::Incoming::Refused { pid, msg } => self.reg.note_limit(pid, &msg),
                data::Incoming::Ignored => {}
            },
            Event::EgressBitrateEstimate(str0m::bwe::BweKind::Twcc { estimate, .. }) => {
                let Some(pid) = self.peers.get(&peer_id).map(|p| p.owner) else {
                    return;
                };
                let Some(p) = self.reg.parts.get_mut(&pid) else {
                    return;
                };
                if p.subscriber != peer_id {
                    return;
                }
                let bps = estimate.as_u64();
                p.egress_estimate = Some(bps);
                // Re-choose layers when the estimate moved by more than 10 %.
                let moved = p.egress_applied.is_none_or(|a| bps.abs_diff(a) * 10 > a);
                if moved {
                    debug!(identity = %p.identity, kbps = bps / 1000, "bandwidth estimate");
                    self.forwarding().rebalance(pid);
                }
            }
            e => self.on_stats(peer_id, &e),
        }
    }
}
