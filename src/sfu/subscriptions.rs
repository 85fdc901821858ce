//! Subscriptions ([`Subscriptions`]: the registry, peers, v1 sections, output queue and delay
//! probe borrowed together): binding a published track to its media section and subscribing
//! the room to it, subscribing and unsubscribing (within the media-section limit), unpublishing,
//! and v0 negotiation (the server's offers on the subscriber peer). v1 subscriptions ask the
//! client for receive-only sections instead.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use str0m::media::{Direction, MediaKind, Mid, Rid};
use tracing::debug;

use super::delay::DelayProbe;
use super::forward::Forwarding;
use super::peer::Role;
use super::peers::Peers;
use super::registry::Registry;
use super::room::{PubTrack, Sub};
use super::sections::Sections;
use super::{limits, Mode, Output, PeerId, Pid};

/// The parts subscriptions work on, borrowed from [`Sfu`](super::Sfu) together.
pub struct Subscriptions<'a> {
    pub reg: &'a mut Registry,
    pub peers: &'a mut Peers,
    pub sections: &'a mut Sections,
    pub out: &'a mut VecDeque<Output>,
    pub probe: &'a mut DelayProbe,
    /// When the datagram being handled reached the kernel, if known.
    pub arrival: Option<Instant>,
    pub taps: &'a mut super::record::Taps,
    /// The time of the input at hand (a v0 offer's start).
    pub now: Instant,
}

impl Subscriptions<'_> {
    fn signal(&mut self, pid: Pid, msg: Resp) {
        self.out.push_back(Output::Signal(pid, Box::new(msg)));
    }

    /// The media path's parts, reborrowed (layer choice after a subscription changed).
    fn forwarding(&mut self) -> Forwarding<'_> {
        Forwarding {
            reg: self.reg,
            peers: self.peers,
            probe: self.probe,
            arrival: self.arrival,
            taps: self.taps,
            out: self.out,
        }
    }

    /// v1: asks the client for the receive-only sections still missing (all, if `force`).
    pub(super) fn request_sections(&mut self, pid: Pid, force: bool) {
        if let Some(req) = self.sections.request(self.reg, pid, force) {
            self.signal(pid, Resp::MediaSectionsRequirement(req));
        }
    }

    /// A publisher's media section appeared: bind it to the track it announced with add_track.
    pub(super) fn on_media_added(
        &mut self,
        peer_id: PeerId,
        mid: Mid,
        kind: MediaKind,
        dir: Direction,
        rids: Vec<Rid>,
    ) {
        let Some(peer) = self.peers.get(&peer_id) else {
            return;
        };
        let pid = peer.owner;
        if dir == Direction::SendOnly {
            // v1: a receive-only section of the client, for a track we forward.
            if peer.role == Role::Single {
                self.sections.add_offered(self.reg, pid, mid, kind);
                self.sections.assign(self.reg, pid);
            }
            return;
        }
        let Some(msid_track) = peer.rtc.media(mid).map(|m| m.track_id().to_string()) else {
            return;
        };
        let Some(part) = self.reg.parts.get(&pid) else {
            return;
        };
        let pending: Vec<&PubTrack> = part
            .tracks
            .iter()
            .filter_map(|t| self.reg.tracks.get(t))
            .filter(|t| t.mid.is_none() && t.kind == kind)
            .collect();
        let chosen = pending
            .iter()
            .find(|t| t.cid == msid_track)
            .or_else(|| pending.first())
            .map(|t| t.sid.clone());
        let Some(track_sid) = chosen else {
            debug!(%mid, "media section without an announced track");
            return;
        };
        let room = part.room.clone();
        if let Some(t) = self.reg.tracks.get_mut(&track_sid) {
            t.mid = Some(mid);
            t.info.mid = mid.to_string();
            // Best layer first: f, h, q.
            let mut rids = rids;
            rids.sort_by_key(|r| match &**r {
                "f" => 0,
                "h" => 1,
                "q" => 2,
                _ => 3,
            });
            t.rids = rids;
        }
        debug!(track = %track_sid, %mid, "published track bound to its media section");
        for other in self.reg.members(&room) {
            let wants = self.reg.parts.get(&other).is_some_and(|p| {
                p.id != pid
                    && p.auto_subscribe
                    && p.perms.can_subscribe
                    && !p.unsubscribed.contains(&track_sid)
            });
            if wants {
                self.subscribe(other, &track_sid);
            }
        }
    }

    /// Subscribes `pid` to what its room already publishes, if it subscribes automatically
    /// and may subscribe (on joining, or when the permission is granted).
    pub(super) fn subscribe_to_published(&mut self, pid: Pid) {
        let Some(p) = self.reg.parts.get(&pid) else {
            return;
        };
        if !p.auto_subscribe || !p.perms.can_subscribe {
            return;
        }
        let existing: Vec<String> = self
            .reg
            .room_tracks(&p.room)
            .into_iter()
            .filter(|t| {
                self.reg
                    .tracks
                    .get(t)
                    .is_some_and(|t| t.owner != pid && t.mid.is_some())
                    && !p.unsubscribed.contains(t)
            })
            .collect();
        for t in existing {
            self.subscribe(pid, &t);
        }
    }

    pub(super) fn subscribe(&mut self, pid: Pid, track_sid: &str) {
        let Some(t) = self.reg.tracks.get(track_sid) else {
            return;
        };
        if t.owner == pid || t.mid.is_none() {
            return;
        }
        let Some(p) = self.reg.parts.get_mut(&pid) else {
            return;
        };
        if !p.perms.can_subscribe || p.subs.contains_key(track_sid) {
            return;
        }
        let (mode, sub_peer) = (p.mode, p.subscriber);
        // Every subscription takes a media section; str0m never removes one (v0: a stopped
        // section stays in the SDP; v1: the client offers one per subscription).
        let sections = match mode {
            Mode::V0 => self.peers.get(&sub_peer).map_or(0, |peer| peer.sections),
            Mode::V1 => p.subs.len() + limits::MAX_TRACKS + 1,
        };
        if sections >= limits::MAX_MEDIA_SECTIONS {
            let msg = format!(
                "subscription to {track_sid} refused: at most {} media sections per connection",
                limits::MAX_MEDIA_SECTIONS
            );
            self.reg.note_limit(pid, &msg);
            return;
        }
        p.subs.insert(track_sid.to_string(), Sub::new(track_sid));
        if let Some(peer) = self.peers.get_mut(&sub_peer).filter(|_| mode == Mode::V0) {
            peer.sections += 1;
        }
        self.forwarding().rebalance(pid);
        match mode {
            Mode::V0 => self.negotiate(sub_peer),
            Mode::V1 => {
                // A free section now carries the track, or more are needed: either way the
                // client must offer again so that the answer can say so.
                self.sections.assign(self.reg, pid);
                self.request_sections(pid, true);
            }
        }
    }

    pub(super) fn unsubscribe(&mut self, pid: Pid, track_sid: &str) {
        let Some(p) = self.reg.parts.get_mut(&pid) else {
            return;
        };
        let Some(sub) = p.subs.remove(track_sid) else {
            return;
        };
        let (mode, sub_peer) = (p.mode, p.subscriber);
        self.forwarding().rebalance(pid);
        let Some(mid) = sub.mid else {
            return;
        };
        // The section's outgoing stream (its SSRC) may carry another track later (v1 reuses
        // sections): that one continues its sequence numbers and timestamps.
        if let (Some(last), Some(peer)) = (sub.rewrite.last_out(), self.peers.get_mut(&sub_peer)) {
            peer.last_out.insert(mid, last);
        }
        match mode {
            Mode::V0 => {
                if let Some(peer) = self.peers.get_mut(&sub_peer) {
                    peer.stopping.push(mid);
                }
                self.negotiate(sub_peer);
            }
            Mode::V1 => {
                let kind = self.reg.tracks.get(track_sid).map(|t| t.kind);
                if let Some(kind) = kind {
                    self.sections.release(pid, mid, kind);
                }
                self.request_sections(pid, true);
            }
        }
    }

    /// Unpublishes a track: every subscription to it ends, and `track_unpublished` is
    /// announced with `owner` (the publisher as it was, and its room, for one already removed
    /// from the registry; looked up when `None`).
    pub(super) fn unpublish(
        &mut self,
        track_sid: &str,
        owner: Option<(lk::ParticipantInfo, &str)>,
    ) {
        let Some(t) = self.reg.tracks.remove(track_sid) else {
            return;
        };
        let (owner, room) = match owner {
            Some((info, room)) => (Some(info), Some(room.to_string())),
            None => (
                self.reg.participant_info(t.owner),
                self.reg.parts.get(&t.owner).map(|p| p.room.clone()),
            ),
        };
        let event_room = room.clone().unwrap_or_default();
        let event = self.reg.event(
            crate::events::TRACK_UNPUBLISHED,
            &event_room,
            owner,
            Some(t.info.clone()),
        );
        self.out.push_back(event);
        let members = match room {
            Some(r) => self.reg.members(&r),
            None => self.reg.parts.keys().copied().collect(),
        };
        // The track is gone from `tracks`, but unsubscribe needs its kind for v1: put a stub back.
        self.reg.tracks.insert(track_sid.to_string(), t);
        for pid in members {
            self.unsubscribe(pid, track_sid);
            // `unsubscribed` holds only tracks that exist.
            if let Some(p) = self.reg.parts.get_mut(&pid) {
                p.unsubscribed.remove(track_sid);
            }
        }
        self.reg.tracks.remove(track_sid);
    }

    /// v0: sends an offer on the subscriber peer for the subscriptions (and data channels)
    /// that need one, unless an offer is already out (then after its answer).
    pub(super) fn negotiate(&mut self, peer_id: PeerId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if peer.role != Role::Subscriber {
            return;
        }
        if peer.pending.is_some() {
            peer.renegotiate = true;
            return;
        }
        peer.renegotiate = false;
        let owner = peer.owner;
        let Some(part) = self.reg.parts.get(&owner) else {
            return;
        };
        // What the new sections carry: (track sid, kind, stream id "PA_…|TR_…").
        let wanted: Vec<(String, MediaKind, String)> = part
            .subs
            .values()
            .filter(|s| s.mid.is_none())
            .filter_map(|s| {
                let t = self.reg.tracks.get(&s.track)?;
                let owner_sid = self.reg.parts.get(&t.owner)?.sid.clone();
                Some((t.sid.clone(), t.kind, format!("{owner_sid}|{}", t.sid)))
            })
            .collect();
        let now = self.now;
        let Some((offer, mids)) = peer.offer(now, &wanted) else {
            return;
        };
        let id = peer.offer_id;
        let mut mid_to_track_id = HashMap::new();
        if let Some(part) = self.reg.parts.get_mut(&owner) {
            for (track, mid) in mids {
                if let Some(s) = part.subs.get_mut(&track) {
                    s.mid = Some(mid);
                    s.needs_keyframe = true;
                }
                mid_to_track_id.insert(mid.to_string(), track);
            }
        }
        self.signal(
            owner,
            Resp::Offer(lk::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id,
                mid_to_track_id,
            }),
        );
        self.peers.mark(peer_id);
    }
}
