//! The signal requests a participant sends about its own connection and tracks
//! ([`Signalling`]: the registry, peers, v1 sections and output queue borrowed together):
//! offers and answers (within the SDP limits), trickle candidates, add_track, subscription and
//! track-setting requests, metadata updates, and refusing what goes over a limit. What a request
//! sets off in other parts (disconnecting, driving str0m, renegotiating, re-choosing layers) is
//! returned to [`Sfu::handle_signal`](super::Sfu::handle_signal), which does it.

use std::collections::{HashMap, VecDeque};

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind};
use str0m::Candidate;
use tracing::{debug, warn};

use super::peers::Peers;
use super::registry::Registry;
use super::room::PubTrack;
use super::sections::{self, Sections};
use super::{limits, rewrite_answer, Mode, Output, PeerId, Pid};
use crate::ids::new_sid;

/// The parts signal requests work on, borrowed from [`Sfu`](super::Sfu) together.
pub struct Signalling<'a> {
    pub reg: &'a mut Registry,
    pub peers: &'a mut Peers,
    pub sections: &'a mut Sections,
    pub out: &'a mut VecDeque<Output>,
}

/// The participant broke the signalling protocol (an offer or answer over the limits, not
/// valid SDP, or not acceptable to str0m; already logged): it is to be disconnected.
pub struct Broken;

/// What an answer to the server's offer came to.
pub enum Answered {
    /// No such peer, or no offer was out.
    Ignored,
    /// Accepted for this participant; its new subscriptions can ask for keyframes, and the
    /// peer may need another offer.
    Accepted(Pid),
    Broken(Pid),
}

/// A participant's update of its own fields, allowed and within the limits.
pub struct OwnUpdate {
    pub metadata: Option<String>,
    pub name: Option<String>,
    pub attributes: HashMap<String, String>,
}

impl Signalling<'_> {
    fn signal(&mut self, pid: Pid, msg: Resp) {
        self.out.push_back(Output::Signal(pid, Box::new(msg)));
    }

    /// An offer from the client on `peer_id`: checked, and accepted by str0m. The answer is
    /// sent by [`Signalling::send_answer`] once the peer has been driven (so that the new media
    /// sections are known); `None` if the peer is gone.
    pub(super) fn accept_offer(
        &mut self,
        pid: Pid,
        peer_id: PeerId,
        sd: &lk::SessionDescription,
    ) -> Result<Option<SdpAnswer>, Broken> {
        if let Err(e) = self.check_sdp(peer_id, &sd.sdp) {
            warn!("participant sent an offer over the limits ({e}); disconnected");
            return Err(Broken);
        }
        let offer = match SdpOffer::from_sdp_string(&sd.sdp) {
            Ok(o) => o,
            Err(e) => {
                warn!("participant sent an offer that is not valid SDP: {e}");
                return Err(Broken);
            }
        };
        // v1: the receive-only sections of the offer are where forwarded tracks go. str0m
        // reports them (MediaAdded) only once media can flow, but the answer must already name
        // what they carry, so they are taken from the offer itself.
        if self.reg.parts.get(&pid).is_some_and(|p| p.mode == Mode::V1) {
            for line in offer.media_lines.iter().filter(|l| !l.disabled) {
                let kind = match line.typ.to_string().as_str() {
                    "audio" => MediaKind::Audio,
                    "video" => MediaKind::Video,
                    _ => continue,
                };
                if line.direction() == Direction::RecvOnly {
                    self.sections.add_offered(self.reg, pid, line.mid(), kind);
                }
            }
            self.sections.assign(self.reg, pid);
        }
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return Ok(None);
        };
        if peer.pending.is_some() {
            // Only v0 subscriber peers offer, and clients never offer on those.
            peer.pending = None;
        }
        let answer = match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                warn!("cannot accept the participant's offer: {e}");
                return Err(Broken);
            }
        };
        // Learn the new media sections (published tracks, v1 receive slots) before answering.
        self.peers.mark(peer_id);
        Ok(Some(answer))
    }

    /// Sends the answer to offer `offer_id` (v1: naming what each receive-only section carries).
    pub(super) fn send_answer(&mut self, pid: Pid, offer_id: u32, answer: SdpAnswer) {
        let mut mid_to_track_id = HashMap::new();
        let mut sdp = answer.to_sdp_string();
        if self.reg.parts.get(&pid).is_some_and(|p| p.mode == Mode::V1) {
            let msids = sections::v1_msids(self.reg, pid);
            for (mid, _, track) in &msids {
                mid_to_track_id.insert(mid.clone(), track.clone());
            }
            let idle = self.sections.idle(pid);
            debug!(offer = offer_id, ?msids, ?idle, "v1 answer");
            sdp = rewrite_answer(&sdp, &msids, &idle);
        }
        self.signal(
            pid,
            Resp::Answer(lk::SessionDescription {
                r#type: "answer".into(),
                sdp,
                id: offer_id,
                mid_to_track_id,
            }),
        );
    }

    /// The client's answer to the server's offer on `peer_id` (a v0 subscriber peer).
    pub(super) fn accept_answer(
        &mut self,
        peer_id: PeerId,
        sd: &lk::SessionDescription,
    ) -> Answered {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return Answered::Ignored;
        };
        peer.offered_at = None;
        let Some(pending) = peer.pending.take() else {
            debug!("answer without a pending offer ignored");
            return Answered::Ignored;
        };
        let owner = peer.owner;
        if let Err(e) = self.check_sdp(peer_id, &sd.sdp) {
            warn!("participant sent an answer over the limits ({e}); disconnected");
            return Answered::Broken(owner);
        }
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return Answered::Ignored;
        };
        let answer = match SdpAnswer::from_sdp_string(&sd.sdp) {
            Ok(a) => a,
            Err(e) => {
                warn!("participant sent an answer that is not valid SDP: {e}");
                return Answered::Broken(owner);
            }
        };
        if let Err(e) = peer.rtc.sdp_api().accept_answer(pending, answer) {
            warn!("cannot accept the participant's answer: {e}");
            return Answered::Broken(owner);
        }
        if let Some(p) = self.reg.parts.get_mut(&owner) {
            for s in p.subs.values_mut() {
                if s.mid.is_some() {
                    s.open = true;
                }
            }
        }
        self.peers.mark(peer_id);
        Answered::Accepted(owner)
    }

    /// A trickled ICE candidate for `peer_id` (at most [`limits::MAX_CANDIDATES`]).
    pub(super) fn trickle(&mut self, peer_id: PeerId, init: &str) {
        #[derive(serde::Deserialize)]
        struct Init {
            candidate: String,
        }
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if peer.candidates >= limits::MAX_CANDIDATES {
            let owner = peer.owner;
            self.reg.note_limit(
                owner,
                &format!(
                    "trickle candidate ignored: at most {} per connection",
                    limits::MAX_CANDIDATES
                ),
            );
            return;
        }
        let cand = serde_json::from_str::<Init>(init)
            .ok()
            .map(|i| i.candidate)
            .filter(|c| !c.is_empty())
            .and_then(|c| Candidate::from_sdp_string(c.trim_start_matches("a=")).ok());
        match cand {
            Some(c) => {
                peer.candidates += 1;
                peer.rtc.add_remote_candidate(c);
            }
            None => debug!("trickle candidate not understood (ignored): {init:.200}"),
        }
    }

    /// add_track: a track the participant is about to publish (bound to its media section
    /// when str0m reports it).
    pub(super) fn add_track(&mut self, pid: Pid, req: lk::AddTrackRequest) {
        let Some(part) = self.reg.parts.get_mut(&pid) else {
            return;
        };
        if !part.perms.can_publish {
            warn!(identity = %part.identity, "add_track refused: the token does not grant canPublish");
            return;
        }
        let kind = if req.r#type == lk::TrackType::Video as i32 {
            MediaKind::Video
        } else if req.r#type == lk::TrackType::Audio as i32 {
            MediaKind::Audio
        } else {
            debug!("add_track of a data track ignored");
            return;
        };
        let check = limits::check_track(&req).and_then(|()| {
            if part.tracks.len() >= limits::MAX_TRACKS {
                Err(format!(
                    "{} tracks are published already; at most {} per participant",
                    part.tracks.len(),
                    limits::MAX_TRACKS
                ))
            } else {
                Ok(())
            }
        });
        if let Err(e) = check {
            let echo = lk::request_response::Request::AddTrack(limits::echo_track(&req));
            self.refuse(pid, 0, Some(echo), format!("add_track refused: {e}"));
            return;
        }
        let sid = new_sid("TR_");
        let mut layers = req.layers.clone();
        layers.sort_by_key(|l| std::cmp::Reverse(l.quality));
        let info = lk::TrackInfo {
            sid: sid.clone(),
            r#type: req.r#type,
            name: req.name.clone(),
            muted: req.muted,
            width: req.width,
            height: req.height,
            simulcast: layers.len() > 1,
            disable_dtx: req.disable_dtx,
            source: req.source,
            layers: layers.clone(),
            stereo: req.stereo,
            disable_red: req.disable_red,
            stream: req.stream.clone(),
            // End-to-end encrypted media (livekit-client's E2EE): the SFU only forwards it, but
            // the subscribers must know, or they would try to play the ciphertext.
            encryption: req.encryption,
            mime_type: if kind == MediaKind::Audio {
                "audio/opus".into()
            } else {
                announced_video_mime(&req)
            },
            ..Default::default()
        };
        part.tracks.push(sid.clone());
        part.version += 1;
        self.reg.tracks.insert(
            sid.clone(),
            PubTrack {
                sid: sid.clone(),
                cid: req.cid.clone(),
                owner: pid,
                kind,
                mid: None,
                info: info.clone(),
                rids: vec![],
                last_keyframe_request: HashMap::new(),
                layer_seen: HashMap::new(),
                params: None,
            },
        );
        self.signal(
            pid,
            Resp::TrackPublished(lk::TrackPublishedResponse {
                cid: req.cid,
                track: Some(info.clone()),
            }),
        );
        self.broadcast_participant(pid);
        let room = self.reg.parts.get(&pid).map(|p| p.room.clone());
        let owner = self.reg.participant_info(pid);
        let event = crate::events::TRACK_PUBLISHED;
        let event = self.reg.event(
            event,
            room.as_deref().unwrap_or_default(),
            owner,
            Some(info),
        );
        self.out.push_back(event);
    }

    /// update_subscription: at most [`limits::MAX_TRACK_IDS`] ids, and only tracks that exist in
    /// the participant's room count (an unknown id is not kept, not even as "unsubscribed"), so
    /// each id costs a lookup, whatever came before. Returns whether to subscribe (or
    /// unsubscribe) and the tracks to, in the order asked; `unsubscribed` is updated already.
    pub(super) fn subscription(
        &mut self,
        pid: Pid,
        s: lk::UpdateSubscription,
    ) -> (bool, Vec<String>) {
        let n = limits::subscription_ids(&s);
        if n > limits::MAX_TRACK_IDS {
            let msg = format!(
                "update_subscription names {n} track ids; at most {} are allowed",
                limits::MAX_TRACK_IDS
            );
            self.refuse(pid, 0, None, msg);
            return (s.subscribe, Vec::new());
        }
        let Some(room) = self.reg.parts.get(&pid).map(|p| p.room.clone()) else {
            return (s.subscribe, Vec::new());
        };
        let sids = s
            .track_sids
            .into_iter()
            .chain(s.participant_tracks.into_iter().flat_map(|p| p.track_sids));
        let mut here = Vec::new();
        for t in sids {
            let in_room = self
                .reg
                .tracks
                .get(&t)
                .and_then(|t| self.reg.parts.get(&t.owner))
                .is_some_and(|owner| owner.room == room);
            if !in_room {
                continue;
            }
            if let Some(p) = self.reg.parts.get_mut(&pid) {
                if s.subscribe {
                    p.unsubscribed.remove(&t);
                } else {
                    p.unsubscribed.insert(t.clone());
                }
            }
            here.push(t);
        }
        (s.subscribe, here)
    }

    /// update_track_settings (at most [`limits::MAX_TRACK_IDS`] ids): what `pid` wants of its
    /// subscriptions. Returns whether they changed (then their layers are to be re-chosen).
    pub(super) fn track_settings(&mut self, pid: Pid, s: lk::UpdateTrackSettings) -> bool {
        let n = s.track_sids.len();
        if n > limits::MAX_TRACK_IDS {
            let msg = format!(
                "update_track_settings names {n} track ids; at most {} are allowed",
                limits::MAX_TRACK_IDS
            );
            self.refuse(pid, 0, None, msg);
            return false;
        }
        let Some(part) = self.reg.parts.get_mut(&pid) else {
            return false;
        };
        for t in &s.track_sids {
            if let Some(sub) = part.subs.get_mut(t) {
                sub.disabled = s.disabled;
                sub.want_width = s.width;
                sub.want_quality = (s.width == 0 && s.height == 0).then_some(s.quality);
            }
        }
        true
    }

    /// update_metadata, if the token grants canUpdateOwnMetadata and the result keeps within the
    /// limits: what to apply. Over a limit, the client is refused.
    pub(super) fn update_metadata(
        &mut self,
        pid: Pid,
        m: lk::UpdateParticipantMetadata,
    ) -> Option<OwnUpdate> {
        // LiveKit's canUpdateOwnMetadata grant.
        let allowed = self
            .reg
            .parts
            .get(&pid)
            .is_some_and(|p| p.can_update_metadata);
        if !allowed {
            return None;
        }
        let name = (!m.name.is_empty()).then_some(m.name);
        let meta = (!m.metadata.is_empty()).then_some(m.metadata);
        match self
            .reg
            .check_update(pid, meta.as_deref(), name.as_deref(), &m.attributes)
        {
            Ok(()) => Some(OwnUpdate {
                metadata: meta,
                name,
                attributes: m.attributes,
            }),
            Err(e) => {
                let echo = lk::UpdateParticipantMetadata {
                    request_id: m.request_id,
                    ..Default::default()
                };
                let req = lk::request_response::Request::UpdateMetadata(echo);
                self.refuse(
                    pid,
                    m.request_id,
                    Some(req),
                    format!("update_metadata refused: {e}"),
                );
                None
            }
        }
    }

    /// Refuses a request over a limit: LiveKit's `RequestResponse` (LIMIT_EXCEEDED) to the
    /// client, and a warning (once per participant; `message` never holds the content).
    pub(super) fn refuse(
        &mut self,
        pid: Pid,
        request_id: u32,
        request: Option<lk::request_response::Request>,
        message: String,
    ) {
        self.reg.note_limit(pid, &message);
        self.signal(pid, limits::refusal(request_id, request, message));
    }

    /// An offer's or answer's candidates and media sections within the limits (counted on the
    /// text, before str0m parses it); the candidates count for the peer.
    fn check_sdp(&mut self, peer_id: PeerId, sdp: &str) -> Result<(), String> {
        let (candidates, sections) = limits::sdp_counts(sdp);
        if sections > limits::MAX_MEDIA_SECTIONS {
            return Err(format!(
                "{sections} media sections; at most {} are allowed",
                limits::MAX_MEDIA_SECTIONS
            ));
        }
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return Ok(());
        };
        if peer.candidates + candidates > limits::MAX_CANDIDATES {
            return Err(format!(
                "{} ICE candidates; at most {} are allowed",
                peer.candidates + candidates,
                limits::MAX_CANDIDATES
            ));
        }
        peer.candidates += candidates;
        Ok(())
    }

    /// Tells the others in the room what changed about `pid` (unless it is hidden).
    pub(super) fn broadcast_participant(&mut self, pid: Pid) {
        let Some(p) = self.reg.parts.get(&pid) else {
            return;
        };
        if p.perms.hidden {
            return;
        }
        let update = Resp::Update(lk::ParticipantUpdate {
            participants: vec![p.info(&self.reg.tracks)],
        });
        for other in self.reg.members(&p.room.clone()) {
            if other != pid {
                self.signal(other, update.clone());
            }
        }
    }
}

/// A video track's MIME type from the codec its publisher announces (`simulcast_codecs`, e.g.
/// livekit-client's "vp8"), known codecs only, else empty (the first packet fills it in:
/// `fanout::payload_params`). Subscribers need it at once: livekit-client sets up an E2EE
/// track's decryption from `TrackInfo.mime_type` when it subscribes, and gives up without it.
fn announced_video_mime(req: &lk::AddTrackRequest) -> String {
    let codec = req
        .simulcast_codecs
        .first()
        .map(|c| c.codec.to_ascii_lowercase())
        .unwrap_or_default();
    match codec.as_str() {
        "vp8" => "video/VP8",
        "vp9" => "video/VP9",
        "h264" => "video/H264",
        "h265" => "video/H265",
        "av1" => "video/AV1",
        _ => "",
    }
    .into()
}
