//! Recording taps: which published tracks a recording (LiveKit's egress) receives, and the copy of
//! each of their packets the SFU hands out ([`RecMsg`], through `Output::Record`). The SFU only
//! chooses packets and says what happened (a track appeared, ended, a layer switched, a sender
//! report arrived, the participant left); the record service (`record/`) depacketizes and writes
//! files on its own thread, so disk I/O never reaches a media thread.
//!
//! A tap costs about what one more subscriber of the track costs: a gate per packet (simulcast:
//! the best layer flowing, switched at a keyframe) and one copy of the payload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use livekit_protocol as lk;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{MediaKind, Rid};
use str0m::rtp::{RtpPacket, Ssrc};

use super::room::{AutoRecord, PubTrack};
use super::{rtp, Output, Pid};

/// What a recording records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordTarget {
    /// One track (`StartTrackEgress`), by sid.
    Track { sid: String },
    /// A participant's microphone and camera, and its screen share if asked
    /// (`StartParticipantEgress`), by identity.
    Participant {
        identity: String,
        screen_share: bool,
    },
}

/// The codec of a recorded track, as negotiated with its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecCodec {
    pub codec: Codec,
    pub clock_rate: u32,
    pub channels: u8,
}

impl RecCodec {
    fn of(p: &PayloadParams) -> RecCodec {
        let spec = p.spec();
        RecCodec {
            codec: spec.codec,
            clock_rate: spec.clock_rate.get(),
            channels: spec.channels.unwrap_or(1),
        }
    }
}

/// One packet of a recorded track (its payload copied out of the forwarded packet).
#[derive(Debug)]
pub struct RecPacket {
    pub egress: Arc<str>,
    pub track: Arc<str>,
    /// The first packet of a new stream for the track (a simulcast layer switch, a new SSRC
    /// after a publisher reconnected): sequence numbers and timestamps start afresh.
    pub restart: bool,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
    /// When the SFU received it (the recorder takes packets in batches, so it cannot tell).
    pub at: Instant,
}

/// What the SFU tells the record service.
#[derive(Debug)]
pub enum RecMsg {
    /// A recording the SFU started itself: the room records everyone who joins
    /// (`roomConfig.egress.participant`, the web app's Record button, `RecordRoom`).
    Started {
        egress: Arc<str>,
        room: String,
        room_sid: String,
        identity: String,
        /// A track recording (`roomConfig.egress.tracks`): the track's sid; else a participant's.
        track: Option<String>,
        /// The `filepath` template to name its files with.
        filepath: String,
    },
    /// A track's first packet is about to follow (its codec is known from then).
    Track {
        egress: Arc<str>,
        track: Arc<str>,
        info: Box<lk::TrackInfo>,
        codec: RecCodec,
    },
    Packet(RecPacket),
    /// An RTCP sender report of the stream being recorded: RTP time `rtp_ts` is wall-clock
    /// `ntp_unix_us` at the publisher (lip sync between a participant's tracks).
    SenderReport {
        egress: Arc<str>,
        track: Arc<str>,
        ntp_unix_us: u64,
        rtp_ts: u32,
    },
    /// A recorded track was unpublished (a participant recording goes on with the others).
    TrackEnded {
        egress: Arc<str>,
        track: Arc<str>,
    },
    /// The recording ends: stopped, its participant left, its track or room is gone.
    Ended {
        egress: Arc<str>,
        reason: String,
    },
}

/// Where the media thread hands [`RecMsg`]s (the record service). Runs on a media thread: it
/// must only queue.
pub trait RecordSink: Send + Sync {
    fn deliver(&self, msg: RecMsg);
}

/// Why a recording cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordRefused {
    #[error("{0} not found")]
    NotFound(String),
    #[error(
        "{0} is end-to-end encrypted: the server cannot read its media, so it cannot record it"
    )]
    Encrypted(String),
}

/// A recording as the SFU sees it once started.
#[derive(Debug, Clone)]
pub struct RecordStarted {
    pub room_sid: String,
    pub identity: String,
    pub track: Option<lk::TrackInfo>,
}

/// One recorded track's gate.
#[derive(Debug, Default)]
struct TapTrack {
    /// The layer being written (`Some(None)`: a track without simulcast); `None`: not started.
    layer: Option<Option<Rid>>,
    ssrc: Option<Ssrc>,
}

struct Tap {
    room: String,
    owner: Pid,
    /// A track recording: its sid. A participant recording: `None`.
    track: Option<String>,
    screen_share: bool,
    tracks: HashMap<String, TapTrack>,
}

impl Tap {
    fn wants(&self, t: &PubTrack) -> bool {
        match &self.track {
            Some(sid) => *sid == t.sid,
            None => {
                let screen = matches!(
                    lk::TrackSource::try_from(t.info.source),
                    Ok(lk::TrackSource::ScreenShare | lk::TrackSource::ScreenShareAudio)
                );
                t.info.encryption == 0 && (!screen || self.screen_share)
            }
        }
    }
}

/// Every recording tap of one SFU.
#[derive(Default)]
pub struct Taps {
    by_egress: HashMap<Arc<str>, Tap>,
    /// The recordings of each publisher (the packet path's lookup).
    by_owner: HashMap<Pid, Vec<Arc<str>>>,
    /// Rooms that record by themselves.
    pub auto: HashMap<String, AutoRecord>,
}

impl Taps {
    pub fn is_empty(&self) -> bool {
        self.by_egress.is_empty()
    }

    pub fn in_room(&self, room: &str) -> bool {
        self.by_egress.values().any(|t| t.room == room)
    }

    pub fn contains(&self, egress: &str) -> bool {
        self.by_egress.contains_key(egress)
    }

    /// Whether `egress` records a whole participant (not one track).
    pub fn is_participant_tap(&self, egress: &str) -> bool {
        self.by_egress
            .get(egress)
            .is_some_and(|t| t.track.is_none())
    }

    pub fn add(
        &mut self,
        egress: &str,
        room: &str,
        owner: Pid,
        track: Option<String>,
        screen_share: bool,
    ) {
        let egress: Arc<str> = Arc::from(egress);
        self.by_owner.entry(owner).or_default().push(egress.clone());
        self.by_egress.insert(
            egress,
            Tap {
                room: room.to_string(),
                owner,
                track,
                screen_share,
                tracks: HashMap::new(),
            },
        );
    }

    /// Removes a recording and tells the record service why it ended. Its room, if it was one.
    pub fn end(
        &mut self,
        egress: &str,
        reason: &str,
        out: &mut impl Extend<Output>,
    ) -> Option<String> {
        let (egress, tap) = self.by_egress.remove_entry(egress)?;
        if let Some(v) = self.by_owner.get_mut(&tap.owner) {
            v.retain(|e| *e != egress);
            if v.is_empty() {
                self.by_owner.remove(&tap.owner);
            }
        }
        out.extend([Output::Record(Box::new(RecMsg::Ended {
            egress,
            reason: reason.to_string(),
        }))]);
        Some(tap.room)
    }

    /// The recordings of `room` (all of them when `room` is `None`).
    pub fn of_room(&self, room: Option<&str>) -> Vec<String> {
        self.by_egress
            .iter()
            .filter(|(_, t)| room.is_none_or(|r| t.room == r))
            .map(|(e, _)| e.to_string())
            .collect()
    }

    /// The recordings whose participant is `pid`.
    pub fn of_owner(&self, pid: Pid) -> Vec<String> {
        self.by_owner
            .get(&pid)
            .map(|v| v.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    /// A track was unpublished: a track recording ends, a participant recording goes on.
    pub fn track_gone(
        &mut self,
        owner: Pid,
        track: &str,
        out: &mut impl Extend<Output>,
    ) -> Vec<String> {
        let mut ended = vec![];
        for egress in self.by_owner.get(&owner).cloned().unwrap_or_default() {
            let Some(tap) = self.by_egress.get_mut(&egress) else {
                continue;
            };
            if tap.track.as_deref() == Some(track) {
                ended.push(egress.to_string());
            } else if tap.tracks.remove(track).is_some_and(|t| t.layer.is_some()) {
                out.extend([Output::Record(Box::new(RecMsg::TrackEnded {
                    egress: egress.clone(),
                    track: Arc::from(track),
                }))]);
            }
        }
        for e in &ended {
            self.end(e, "the track was unpublished", out);
        }
        ended
    }

    /// The recordings' copy of one packet of `t` (layer `rid`): for each recording of the
    /// publisher that wants the track, the gate (simulcast: the best layer flowing, switched at
    /// a keyframe; video starts at a keyframe), then the copy. Returns the layers a recording
    /// waits for a keyframe of.
    #[allow(clippy::too_many_arguments)]
    pub fn on_packet(
        &mut self,
        now: Instant,
        owner: Pid,
        t: &PubTrack,
        rid: Option<Rid>,
        params: &PayloadParams,
        pkt: &RtpPacket,
        out: &mut impl Extend<Output>,
    ) -> Option<Option<Rid>> {
        let egresses = self.by_owner.get(&owner)?;
        let video = t.kind == MediaKind::Video;
        let target = if t.simulcast() {
            t.flowing_layer(t.rids.first().copied(), now)
        } else {
            None
        };
        let mut keyframe = None;
        let mut want = None;
        let mut track_sid: Option<Arc<str>> = None;
        for egress in egresses {
            let Some(tap) = self.by_egress.get_mut(egress) else {
                continue;
            };
            if !tap.wants(t) {
                continue;
            }
            let tt = tap.tracks.entry(t.sid.clone()).or_default();
            let current = tt.layer;
            let switch = current != Some(rid);
            if switch {
                // Only the target layer is switched to, and video only at a keyframe.
                if rid != target {
                    continue;
                }
                let kf = *keyframe.get_or_insert_with(|| {
                    video && rtp::starts_keyframe(params.spec().codec, &pkt.payload)
                });
                if video && !kf {
                    want = Some(target);
                    continue;
                }
            }
            let ssrc_changed = tt.ssrc.is_some_and(|s| s != pkt.header.ssrc);
            tt.layer = Some(rid);
            tt.ssrc = Some(pkt.header.ssrc);
            let sid = track_sid
                .get_or_insert_with(|| Arc::from(t.sid.as_str()))
                .clone();
            if current.is_none() {
                out.extend([Output::Record(Box::new(RecMsg::Track {
                    egress: egress.clone(),
                    track: sid.clone(),
                    info: Box::new(t.info.clone()),
                    codec: RecCodec::of(params),
                }))]);
            } else if switch || ssrc_changed {
                tracing::debug!(egress = %egress, track = %t.sid, ?rid, "recording switches stream");
            }
            if target != rid && current == Some(rid) && t.simulcast() {
                // Still on the old layer until the target's keyframe: ask for it.
                want = Some(target);
            }
            out.extend([Output::Record(Box::new(RecMsg::Packet(RecPacket {
                egress: egress.clone(),
                track: sid,
                restart: current.is_some() && (switch || ssrc_changed),
                seq: (*pkt.seq_no) as u16,
                ts: pkt.header.timestamp,
                marker: pkt.header.marker,
                payload: pkt.payload.to_vec(),
                at: now,
            })))]);
        }
        want
    }

    /// A sender report for `t`'s layer `rid`, for the recordings writing that layer.
    pub fn sender_report(
        &self,
        owner: Pid,
        t: &PubTrack,
        rid: Option<Rid>,
        info: &str0m::rtp::rtcp::SenderInfo,
        out: &mut impl Extend<Output>,
    ) {
        let Some(egresses) = self.by_owner.get(&owner) else {
            return;
        };
        let Ok(since) = info.ntp_time.duration_since(std::time::UNIX_EPOCH) else {
            return;
        };
        for egress in egresses {
            let writing = self
                .by_egress
                .get(egress)
                .and_then(|tap| tap.tracks.get(&t.sid))
                .is_some_and(|tt| tt.layer == Some(rid));
            if writing {
                out.extend([Output::Record(Box::new(RecMsg::SenderReport {
                    egress: egress.clone(),
                    track: Arc::from(t.sid.as_str()),
                    ntp_unix_us: since.as_micros() as u64,
                    rtp_ts: info.rtp_time.numer() as u32,
                }))]);
            }
        }
    }
}

// ---------------------------------------------------------------- the SFU's side

impl super::Sfu {
    /// Starts recording `target` in `room` as `egress` (a keyframe is asked for at once, so the
    /// file starts decodable).
    pub(super) fn start_recording(
        &mut self,
        now: Instant,
        room: &str,
        egress: &str,
        target: &RecordTarget,
    ) -> Result<RecordStarted, RecordRefused> {
        let room_sid = self
            .reg
            .rooms
            .get(room)
            .map(|r| r.sid.clone())
            .ok_or_else(|| RecordRefused::NotFound(format!("room {room:?}")))?;
        let (owner, track, screen_share) = match target {
            RecordTarget::Track { sid } => {
                let t = self
                    .reg
                    .tracks
                    .get(sid)
                    .filter(|t| self.reg.parts.get(&t.owner).is_some_and(|p| p.room == room))
                    .ok_or_else(|| {
                        RecordRefused::NotFound(format!("track {sid:?} in room {room:?}"))
                    })?;
                if t.info.encryption != 0 {
                    return Err(RecordRefused::Encrypted(format!("track {sid:?}")));
                }
                (t.owner, Some(t.info.clone()), false)
            }
            RecordTarget::Participant {
                identity,
                screen_share,
            } => {
                let pid = self.reg.find(room, identity).ok_or_else(|| {
                    RecordRefused::NotFound(format!("participant {identity:?} in room {room:?}"))
                })?;
                let encrypted = self.reg.parts.get(&pid).is_some_and(|p| {
                    p.tracks.iter().any(|t| {
                        self.reg
                            .tracks
                            .get(t)
                            .is_some_and(|t| t.info.encryption != 0)
                    })
                });
                if encrypted {
                    return Err(RecordRefused::Encrypted(format!(
                        "the media of participant {identity:?}"
                    )));
                }
                (pid, None, *screen_share)
            }
        };
        let identity = self.identity(owner).unwrap_or_default().to_string();
        let only = track.as_ref().map(|t| t.sid.clone());
        self.taps
            .add(egress, room, owner, only.clone(), screen_share);
        tracing::info!(%room, %identity, %egress, track = only.as_deref().unwrap_or("(all)"), "recording started");
        self.request_recording_keyframes(now, owner, only.as_deref());
        self.recordings_changed(room);
        Ok(RecordStarted {
            room_sid,
            identity,
            track,
        })
    }

    /// Asks the publisher for a keyframe of the best layer of each recorded video track.
    fn request_recording_keyframes(&mut self, now: Instant, owner: Pid, only: Option<&str>) {
        let tracks: Vec<(String, Option<Rid>)> = self
            .reg
            .parts
            .get(&owner)
            .map(|p| {
                p.tracks
                    .iter()
                    .filter(|t| only.is_none_or(|o| o == t.as_str()))
                    .filter_map(|t| self.reg.tracks.get(t))
                    .map(|t| (t.sid.clone(), t.rids.first().copied()))
                    .collect()
            })
            .unwrap_or_default();
        for (sid, rid) in tracks {
            self.forwarding().request_keyframe(now, &sid, rid);
        }
    }

    /// Ends a recording (the record service finishes its file). Whether it was running here.
    pub(super) fn stop_recording(&mut self, egress: &str, reason: &str) -> bool {
        match self.taps.end(egress, reason, &mut self.out) {
            Some(room) => {
                self.recordings_changed(&room);
                true
            }
            None => false,
        }
    }

    /// The room records everyone (`filepath`: the template for their files) from now on, or
    /// (`None`) stops every recording of the room and recording by itself. Returns the
    /// recordings started or stopped.
    pub(super) fn record_room(
        &mut self,
        now: Instant,
        room: &str,
        filepath: Option<String>,
    ) -> Result<Vec<String>, RecordRefused> {
        if !self.reg.rooms.contains_key(room) {
            return Err(RecordRefused::NotFound(format!("room {room:?}")));
        }
        let Some(filepath) = filepath else {
            self.taps.auto.remove(room);
            let egresses = self.taps.of_room(Some(room));
            for e in &egresses {
                self.taps.end(e, "recording stopped", &mut self.out);
            }
            self.recordings_changed(room);
            return Ok(egresses);
        };
        let encrypted = self.reg.members(room).iter().any(|pid| {
            self.reg.parts.get(pid).is_some_and(|p| {
                p.tracks.iter().any(|t| {
                    self.reg
                        .tracks
                        .get(t)
                        .is_some_and(|t| t.info.encryption != 0)
                })
            })
        });
        if encrypted {
            return Err(RecordRefused::Encrypted(format!("room {room:?}")));
        }
        self.taps
            .auto
            .entry(room.to_string())
            .or_default()
            .participant = Some(filepath);
        let mut started = vec![];
        for pid in self.reg.members(room) {
            started.extend(self.auto_record_participant(now, pid));
        }
        self.recordings_changed(room);
        Ok(started)
    }

    /// A participant became active in a room that records everyone: its recording starts
    /// (unless one runs already).
    pub(super) fn auto_record_participant(&mut self, now: Instant, pid: Pid) -> Option<String> {
        let p = self.reg.parts.get(&pid)?;
        let filepath = self.taps.auto.get(&p.room)?.participant.clone()?;
        if p.perms.hidden || p.state != lk::participant_info::State::Active {
            return None;
        }
        let running = self.taps.of_owner(pid);
        if running.iter().any(|e| self.taps.is_participant_tap(e)) {
            return None;
        }
        let (room, identity) = (p.room.clone(), p.identity.clone());
        let room_sid = self.reg.rooms.get(&room).map(|r| r.sid.clone())?;
        let egress = crate::ids::new_sid("EG_");
        self.out.push_back(Output::Record(Box::new(RecMsg::Started {
            egress: Arc::from(egress.as_str()),
            room: room.clone(),
            room_sid,
            identity: identity.clone(),
            track: None,
            filepath,
        })));
        self.taps.add(&egress, &room, pid, None, false);
        tracing::info!(%room, %identity, %egress, "room recording: participant recorded");
        self.request_recording_keyframes(now, pid, None);
        self.recordings_changed(&room);
        Some(egress)
    }

    /// A track was published in a room that records every track: its recording starts.
    pub(super) fn auto_record_track(&mut self, now: Instant, pid: Pid, sid: &str) {
        let Some(p) = self.reg.parts.get(&pid) else {
            return;
        };
        let Some(filepath) = self.taps.auto.get(&p.room).and_then(|a| a.tracks.clone()) else {
            return;
        };
        let encrypted = self
            .reg
            .tracks
            .get(sid)
            .is_none_or(|t| t.info.encryption != 0);
        if p.perms.hidden || encrypted {
            return;
        }
        let (room, identity) = (p.room.clone(), p.identity.clone());
        let Some(room_sid) = self.reg.rooms.get(&room).map(|r| r.sid.clone()) else {
            return;
        };
        let egress = crate::ids::new_sid("EG_");
        self.out.push_back(Output::Record(Box::new(RecMsg::Started {
            egress: Arc::from(egress.as_str()),
            room: room.clone(),
            room_sid,
            identity,
            track: Some(sid.to_string()),
            filepath,
        })));
        self.taps
            .add(&egress, &room, pid, Some(sid.to_string()), false);
        self.request_recording_keyframes(now, pid, Some(sid));
        self.recordings_changed(&room);
    }

    /// Tells the room whether anything in it is being recorded (LiveKit's
    /// `Room.active_recording`: livekit-client's `room.isRecording`), when that changed.
    pub(super) fn recordings_changed(&mut self, room: &str) {
        let recording = self.taps.in_room(room);
        let Some(r) = self.reg.rooms.get_mut(room) else {
            return;
        };
        if r.recording == recording {
            return;
        }
        r.recording = recording;
        r.version += 1;
        let info = {
            let Some(r) = self.reg.rooms.get(room) else {
                return;
            };
            self.reg.room_info(r)
        };
        for pid in self.reg.members(room) {
            self.signal(
                pid,
                lk::signal_response::Message::RoomUpdate(lk::RoomUpdate {
                    room: Some(info.clone()),
                }),
            );
        }
    }

    /// A recorded track was unpublished.
    pub(super) fn recorded_track_gone(&mut self, owner: Pid, track: &str) {
        if self.taps.is_empty() {
            return;
        }
        let room = self.reg.parts.get(&owner).map(|p| p.room.clone());
        if !self.taps.track_gone(owner, track, &mut self.out).is_empty() {
            if let Some(room) = room {
                self.recordings_changed(&room);
            }
        }
    }

    /// A participant is leaving: its recordings end.
    pub(super) fn recorded_participant_gone(&mut self, pid: Pid, room: &str) {
        let egresses = self.taps.of_owner(pid);
        for e in &egresses {
            self.taps.end(e, "the participant left", &mut self.out);
        }
        if !egresses.is_empty() {
            self.recordings_changed(room);
        }
    }

    /// The record service lost data of a recording's track and waits for a keyframe.
    pub(super) fn recording_keyframe(&mut self, now: Instant, egress: &str, track: &str) -> bool {
        if !self.taps.contains(egress) {
            return false;
        }
        let rid = self
            .reg
            .tracks
            .get(track)
            .and_then(|t| t.rids.first().copied());
        self.forwarding().request_keyframe(now, track, rid);
        true
    }
}
