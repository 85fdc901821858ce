//! The records of rooms, participants, published tracks and subscriptions (the registry,
//! registry.rs, keeps them by key), and how each looks on the wire (LiveKit's `Room`,
//! `ParticipantInfo`, `TrackInfo`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use livekit_protocol as lk;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};

use super::{PeerId, Pid};

/// What a participant's token lets it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub hidden: bool,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            hidden: false,
        }
    }
}

/// Which signalling path a participant came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/rtc`: a publisher PeerConnection (client offers) and a subscriber one (server offers).
    V0,
    /// `/rtc/v1`: one PeerConnection; the client always offers and adds receive-only media
    /// sections when the server asks for them.
    V1,
}

pub struct Room {
    pub sid: String,
    pub name: String,
    pub created_unix_ms: i64,
    pub metadata: String,
    pub max_participants: u32,
    pub empty_timeout_s: u32,
    /// How long a participant whose signal connection dropped is kept for a resume.
    pub departure_timeout_s: u32,
    pub participants: Vec<Pid>,
    /// When the room became empty (or was created empty); closed after `empty_timeout`.
    pub empty_since: Option<Instant>,
    pub version: u32,
    /// Something in the room is being recorded (LiveKit's `active_recording`).
    pub recording: bool,
}

impl Room {
    pub fn info(&self, num_participants: u32, num_publishers: u32) -> lk::Room {
        lk::Room {
            sid: self.sid.clone(),
            name: self.name.clone(),
            empty_timeout: self.empty_timeout_s,
            departure_timeout: self.departure_timeout_s,
            max_participants: self.max_participants,
            creation_time: self.created_unix_ms / 1000,
            creation_time_ms: self.created_unix_ms,
            metadata: self.metadata.clone(),
            num_participants,
            num_publishers,
            active_recording: self.recording,
            ..Default::default()
        }
    }
}

/// What a new room is created with: `CreateRoom`'s fields, or the `roomConfig` of the token whose
/// join creates it (zero and empty mean "the server's default", as in protobuf).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomSettings {
    pub max_participants: u32,
    pub empty_timeout: u32,
    pub departure_timeout: u32,
    pub metadata: String,
    /// Agents to dispatch when the room starts; `None`: automatic dispatch.
    pub agents: Option<Vec<lk::RoomAgentDispatch>>,
    /// What the room records by itself (`egress`: participants, tracks).
    pub egress: AutoRecord,
}

impl RoomSettings {
    /// A token's `roomConfig` (LiveKit's `RoomConfiguration`). As in LiveKit, listed agents
    /// replace automatic dispatch; a configuration without agents leaves it on.
    pub fn from_config(c: &lk::RoomConfiguration) -> RoomSettings {
        RoomSettings {
            max_participants: c.max_participants,
            empty_timeout: c.empty_timeout,
            departure_timeout: c.departure_timeout,
            metadata: c.metadata.clone(),
            agents: (!c.agents.is_empty()).then(|| c.agents.clone()),
            egress: c
                .egress
                .as_ref()
                .map(AutoRecord::from_config)
                .unwrap_or_default(),
        }
    }
}

/// What a room records by itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoRecord {
    /// Every participant, as it joins, with this `filepath` template.
    pub participant: Option<String>,
    /// Every published track, with this `filepath` template.
    pub tracks: Option<String>,
}

impl AutoRecord {
    /// A room's `RoomEgress` (token `roomConfig.egress`, `CreateRoom.egress`); the room
    /// composite is not recorded (it needs a renderer).
    pub fn from_config(e: &lk::RoomEgress) -> AutoRecord {
        AutoRecord {
            participant: e.participant.as_ref().map(|p| {
                p.file_outputs
                    .first()
                    .map(|f| f.filepath.clone())
                    .unwrap_or_default()
            }),
            tracks: e.tracks.as_ref().map(|t| t.filepath.clone()),
        }
    }

    pub fn is_off(&self) -> bool {
        self.participant.is_none() && self.tracks.is_none()
    }
}

/// LiveKit's simulcast layers: rid `q`, `h`, `f` is VideoQuality LOW (0), MEDIUM (1), HIGH (2).
pub fn rid_quality(rid: &str) -> i32 {
    match rid {
        "q" => 0,
        "h" => 1,
        _ => 2,
    }
}

pub fn quality_rid(quality: i32) -> &'static str {
    match quality {
        0 => "q",
        1 => "h",
        _ => "f",
    }
}

/// What a layer costs when the publisher did not say (LiveKit's defaults for 720p simulcast).
pub fn default_layer_bitrate(rid: &str) -> u64 {
    match rid {
        "q" => 150_000,
        "h" => 500_000,
        _ => 1_700_000,
    }
}

/// Audio a subscriber receives, per track, in a bandwidth budget (Opus with headers).
pub const AUDIO_BUDGET: u64 = 64_000;

/// The best layer at or below `wanted` that fits `budget` (bits/s), else the lowest one.
/// `rids` are best first; `bitrate` gives a layer's cost.
pub fn cap_layer(
    wanted: Option<Rid>,
    rids: &[Rid],
    budget: Option<u64>,
    bitrate: impl Fn(&Rid) -> u64,
) -> Option<Rid> {
    let Some(budget) = budget else {
        return wanted;
    };
    let at = wanted
        .and_then(|w| rids.iter().position(|r| *r == w))
        .unwrap_or(0);
    let below = rids.get(at..).unwrap_or_default();
    below
        .iter()
        .find(|r| bitrate(r) <= budget)
        .or(below.last())
        .copied()
        .or(wanted)
}

/// A simulcast layer without media for this long counts as switched off.
const LAYER_IDLE: std::time::Duration = std::time::Duration::from_millis(1000);

/// A track a participant publishes. Its media arrives on the publisher peer at `mid` (known once
/// the client's offer carrying it has been accepted).
pub struct PubTrack {
    pub sid: String,
    pub cid: String,
    pub owner: Pid,
    pub kind: MediaKind,
    pub mid: Option<Mid>,
    pub info: lk::TrackInfo,
    /// Simulcast layers the client announced, best first (`f`, `h`, `q`).
    pub rids: Vec<Rid>,
    /// Throttle for keyframe requests to the publisher, per layer.
    pub last_keyframe_request: HashMap<Option<Rid>, Instant>,
    /// When each simulcast layer last carried media. The browser turns layers on and off with
    /// its bandwidth estimate (the best one only after a ramp-up of seconds).
    pub layer_seen: HashMap<Rid, Instant>,
    /// The codec parameters of the payload type last received (looked up again when the PT
    /// changes).
    pub params: Option<PayloadParams>,
}

impl PubTrack {
    pub fn simulcast(&self) -> bool {
        self.rids.len() > 1
    }

    /// What a layer costs: the bitrate the publisher announced for it, else LiveKit's default.
    pub fn layer_bitrate(&self, rid: &Rid) -> u64 {
        let q = rid_quality(rid);
        self.info
            .layers
            .iter()
            .find(|l| l.quality == q && l.bitrate > 0)
            .map_or_else(|| default_layer_bitrate(rid), |l| l.bitrate as u64)
    }

    /// The layer to forward to a subscriber that wants `desired`: that one if it is flowing,
    /// else the next lower one flowing, else the next higher one flowing.
    pub fn flowing_layer(&self, desired: Option<Rid>, now: Instant) -> Option<Rid> {
        let live = |r: &Rid| {
            self.layer_seen
                .get(r)
                .is_some_and(|t| now.saturating_duration_since(*t) < LAYER_IDLE)
        };
        let at = desired
            .and_then(|d| self.rids.iter().position(|r| *r == d))
            .unwrap_or(0);
        let (better, worse) = self.rids.split_at(at);
        worse
            .iter()
            .find(|r| live(r))
            .or_else(|| better.iter().rev().find(|r| live(r)))
            .copied()
            .or(desired)
    }
}

/// A subscription of one participant to one published track.
pub struct Sub {
    pub track: String,
    /// Media section on the subscriber peer that carries the track (once negotiated).
    pub mid: Option<Mid>,
    /// Negotiated: the remote peer has answered (v0) or offered (v1) the section.
    pub open: bool,
    /// Layer being forwarded, the one to forward (switch on its next keyframe), and the one
    /// the subscriber asked for (the target is lower when bandwidth is short).
    pub current: Option<Rid>,
    pub target: Option<Rid>,
    pub wanted: Option<Rid>,
    /// The subscriber disabled the track (`UpdateTrackSettings.disabled`).
    pub disabled: bool,
    /// Requested size; 0 = no preference (take the best layer).
    pub want_width: u32,
    pub want_quality: Option<i32>,
    /// Sequence number and timestamp rewriting of what is forwarded (continuous across layer
    /// switches).
    pub rewrite: super::rtp::Rewrite,
    /// VP8 PictureID / TL0PICIDX rewriting (continuous across layer switches).
    pub vp8: super::rtp::Vp8Munge,
    /// The last payload type mapping: the publisher's PT, and the subscriber's for the same
    /// codec parameters.
    pub pt_map: Option<(Pt, Pt)>,
    pub needs_keyframe: bool,
    /// The subscriber's send stream keeps [`super::RTX_AGE`] of packets for retransmission.
    pub rtx_sized: bool,
    /// A media section that was used before and is being stopped.
    pub stopping: bool,
}

impl Sub {
    pub fn new(track: &str) -> Sub {
        Sub {
            track: track.to_string(),
            mid: None,
            open: false,
            current: None,
            target: None,
            wanted: None,
            disabled: false,
            want_width: 0,
            want_quality: None,
            rewrite: Default::default(),
            vp8: Default::default(),
            pt_map: None,
            needs_keyframe: true,
            rtx_sized: false,
            stopping: false,
        }
    }
}

pub struct Participant {
    pub id: Pid,
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub room: String,
    pub perms: Permissions,
    pub mode: Mode,
    pub joined_unix_ms: i64,
    pub version: u32,
    pub state: lk::participant_info::State,
    pub auto_subscribe: bool,
    /// The peer that receives this participant's media (and its data in v0).
    pub publisher: PeerId,
    /// The peer that sends media to this participant (the same peer in v1).
    pub subscriber: PeerId,
    /// Tracks this participant publishes, by track sid.
    pub tracks: Vec<String>,
    /// Subscriptions, by track sid.
    pub subs: BTreeMap<String, Sub>,
    /// Tracks explicitly unsubscribed (not re-subscribed automatically): only tracks that
    /// exist in the room (so at most its participants × `limits::MAX_TRACKS`).
    pub unsubscribed: HashSet<String>,
    /// A limit was hit and logged as a warning (later ones are logged at debug level).
    pub limit_logged: bool,
    /// Session went away; the participant is kept until this instant for a resume.
    pub gone_since: Option<Instant>,
    /// Smoothed audio level (0..1) and when it was last heard.
    pub audio_level: f32,
    pub last_audio: Option<Instant>,
    pub client_protocol: i32,
    /// The subscriber peer's bandwidth estimate (TWCC), and the one the layers were chosen for.
    pub egress_estimate: Option<u64>,
    pub egress_applied: Option<u64>,
    /// The token's `canUpdateOwnMetadata`: may change its own name, metadata, attributes.
    pub can_update_metadata: bool,
    /// LiveKit's participant kind (`STANDARD`, `AGENT`, …).
    pub kind: lk::participant_info::Kind,
    /// Kept this long for a resume after its signal connection drops (its room's setting).
    pub departure_timeout: std::time::Duration,
}

impl Participant {
    pub fn info(&self, tracks: &super::FastMap<String, PubTrack>) -> lk::ParticipantInfo {
        lk::ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            state: self.state as i32,
            tracks: self
                .tracks
                .iter()
                .filter_map(|t| tracks.get(t))
                .map(|t| t.info.clone())
                .collect(),
            metadata: self.metadata.clone(),
            joined_at: self.joined_unix_ms / 1000,
            joined_at_ms: self.joined_unix_ms,
            name: self.name.clone(),
            version: self.version,
            permission: Some(lk::ParticipantPermission {
                can_subscribe: self.perms.can_subscribe,
                can_publish: self.perms.can_publish,
                can_publish_data: self.perms.can_publish_data,
                hidden: self.perms.hidden,
                ..Default::default()
            }),
            is_publisher: !self.tracks.is_empty(),
            attributes: self.attributes.clone(),
            client_protocol: self.client_protocol,
            kind: self.kind as i32,
            ..Default::default()
        }
    }
}
