//! The media path ([`Forwarding`]: the registry, peers and delay probe borrowed together)
//! around the fan-out: a received packet is matched to its published track and
//! handed to [`Fanout`] for the room's subscribers; simulcast layer choice (wanted, fitting the
//! bandwidth estimate), keyframe requests, active speakers.

use str0m::rtp::RtpPacket;

use super::delay::DelayProbe;
use super::fanout::{note_source, payload_params, Fanout, Source};
use super::peers::Peers;
use super::registry::Registry;
use super::*;

/// The parts the media path works on, borrowed from [`Sfu`] together: the registry (tracks,
/// subscriptions), the peers, and the delay probe with the arrival of the datagram at hand.
pub struct Forwarding<'a> {
    pub reg: &'a mut Registry,
    pub peers: &'a mut Peers,
    pub probe: &'a mut DelayProbe,
    /// When the datagram being handled reached the kernel, if known.
    pub arrival: Option<Instant>,
    /// The recordings' taps (record.rs) and where their copies go.
    pub taps: &'a mut super::record::Taps,
    pub out: &'a mut std::collections::VecDeque<Output>,
}

impl Forwarding<'_> {
    /// An RTP packet arrived from a publisher: forward it to every subscriber of its track
    /// (one simulcast layer each), rewriting sequence number, timestamp and payload type.
    pub(super) fn on_rtp_packet(&mut self, now: Instant, peer_id: PeerId, pkt: RtpPacket) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let pid = peer.owner;
        // The receive stream knows the section and layer of the SSRC (the header carries mid
        // and rid only until the first receiver report).
        let Some((mid, rid)) = peer
            .rtc
            .direct_api()
            .stream_rx(&pkt.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return;
        };
        // The room's member list is borrowed out of the room for the packet (not cloned per
        // packet) and put back afterwards; nothing below changes membership.
        let members = match self
            .reg
            .parts
            .get(&pid)
            .and_then(|p| self.reg.rooms.get_mut(&p.room))
        {
            Some(r) => std::mem::take(&mut r.participants),
            None => return,
        };
        let from = Source {
            pid,
            peer_id,
            mid,
            rid,
        };
        self.forward_packet(now, &from, &members, &pkt);
        if let Some(r) = self
            .reg
            .parts
            .get(&pid)
            .and_then(|p| self.reg.rooms.get_mut(&p.room))
        {
            r.participants = members;
        }
    }

    /// Forwards one packet of a published track to the subscribers of it among `members`.
    fn forward_packet(&mut self, now: Instant, from: &Source, members: &[Pid], pkt: &RtpPacket) {
        // Is this packet's delay through confab measured (delay.rs)? Only when its arrival
        // is known.
        let probe_at = match self.arrival {
            Some(at) if self.probe.sample() => Some(at),
            _ => None,
        };
        let Forwarding {
            reg,
            peers,
            probe,
            taps,
            out,
            ..
        } = self;
        let (parts, tracks) = (&mut reg.parts, &mut reg.tracks);
        let (peers, dirty) = (&mut peers.map, &mut peers.dirty);
        let Some(part) = parts.get_mut(&from.pid) else {
            return;
        };
        let Some(t) = part
            .tracks
            .iter()
            .find(|t| tracks.get(*t).is_some_and(|t| t.mid == Some(from.mid)))
            .and_then(|sid| tracks.get_mut(sid))
        else {
            return;
        };
        let pt = pkt.header.payload_type;
        let Some(params) = payload_params(t, peers.get(&from.peer_id).map(|p| &**p), pt) else {
            return;
        };
        note_source(now, part, t, from.rid, pkt);
        let mut fan = Fanout::new(now, t, from.rid, params, pkt, probe_at);
        for &other in members {
            if other == from.pid {
                continue;
            }
            let Some(p) = parts.get_mut(&other) else {
                continue;
            };
            let sub_peer = p.subscriber;
            let (Some(s), Some(peer)) = (p.subs.get_mut(&t.sid), peers.get_mut(&sub_peer)) else {
                continue;
            };
            // Each subscriber peer is queued for polling once (a flag, not a search of the
            // queue: that was quadratic in the subscribers).
            if fan.forward(s, peer, probe) && !peer.queued {
                peer.queued = true;
                dirty.push(sub_peer);
            }
        }
        let mut want_keyframe = fan.want_keyframe;
        if !taps.is_empty() {
            if let Some(rid) = taps.on_packet(now, from.pid, t, from.rid, &params, pkt, *out) {
                want_keyframe.push(rid);
            }
        }
        if want_keyframe.len > 0 {
            let sid = t.sid.clone();
            for rid in want_keyframe.iter() {
                self.request_keyframe(now, &sid, rid);
            }
        }
    }

    /// Requests a keyframe for every subscription that just became able to receive media.
    pub(super) fn request_keyframes_for_new_subs(&mut self, now: Instant, pid: Pid) {
        let Some(p) = self.reg.parts.get(&pid) else {
            return;
        };
        let wanted: Vec<(String, Option<Rid>)> = p
            .subs
            .values()
            .filter(|s| s.open && s.needs_keyframe)
            .map(|s| (s.track.clone(), s.target))
            .collect();
        for (t, rid) in wanted {
            self.request_keyframe(now, &t, rid);
        }
    }

    pub(super) fn request_keyframe(&mut self, now: Instant, track_sid: &str, rid: Option<Rid>) {
        let Some(t) = self.reg.tracks.get_mut(track_sid) else {
            return;
        };
        if t.kind != MediaKind::Video {
            return;
        }
        let Some(mid) = t.mid else {
            return;
        };
        if t.last_keyframe_request
            .get(&rid)
            .is_some_and(|last| now.saturating_duration_since(*last) < KEYFRAME_THROTTLE)
        {
            return;
        }
        t.last_keyframe_request.insert(rid, now);
        let Some(owner) = self.reg.parts.get(&t.owner) else {
            return;
        };
        let peer_id = owner.publisher;
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            match peer.rtc.direct_api().stream_rx_by_mid(mid, rid) {
                Some(rx) => rx.request_keyframe(KeyframeRequestKind::Pli),
                None => debug!(%mid, ?rid, "keyframe request not sent: no stream yet"),
            }
            self.peers.mark(peer_id);
        }
    }

    /// Picks the simulcast layer a subscriber should get: the smallest layer at least as wide
    /// as it asked for (the best when it did not say), never above what it can take.
    pub(super) fn choose_layer(&mut self, pid: Pid, track_sid: &str) {
        let budget = self.video_budget(pid);
        let Some(t) = self.reg.tracks.get(track_sid) else {
            return;
        };
        if !t.simulcast() {
            return;
        }
        let Some(s) = self
            .reg
            .parts
            .get_mut(&pid)
            .and_then(|p| p.subs.get_mut(track_sid))
        else {
            return;
        };
        let by_quality = |q: i32| {
            let rid = room::quality_rid(q);
            t.rids.iter().find(|r| &***r == rid).copied()
        };
        let wanted = if let Some(q) = s.want_quality {
            by_quality(q)
        } else if s.want_width > 0 {
            // layers are best first; take the last one still wide enough.
            let layers = &t.info.layers;
            let mut pick = layers.first().map(|l| l.quality);
            for l in layers {
                if l.width >= s.want_width {
                    pick = Some(l.quality);
                }
            }
            pick.and_then(by_quality)
        } else {
            None
        }
        .or_else(|| t.rids.first().copied());
        s.wanted = wanted;
        let target = room::cap_layer(wanted, &t.rids, budget, |r| t.layer_bitrate(r));
        if s.target != target {
            s.target = target;
            s.needs_keyframe = true;
        }
    }

    /// What one video subscription of `pid` may use: the estimate less audio, shared equally.
    pub(super) fn video_budget(&self, pid: Pid) -> Option<u64> {
        let p = self.reg.parts.get(&pid)?;
        let estimate = p.egress_estimate?;
        let (mut audio, mut video) = (0u64, 0u64);
        for s in p.subs.values().filter(|s| !s.disabled) {
            match self.reg.tracks.get(&s.track).map(|t| t.kind) {
                Some(MediaKind::Audio) => audio += 1,
                Some(MediaKind::Video) => video += 1,
                None => {}
            }
        }
        Some(estimate.saturating_sub(audio * room::AUDIO_BUDGET) / video.max(1))
    }

    /// Re-chooses every simulcast subscription of `pid` for its bandwidth estimate, and tells
    /// its peer's estimator how much it would like to send (so it probes for that much).
    pub(super) fn rebalance(&mut self, pid: Pid) {
        let Some(p) = self.reg.parts.get(&pid) else {
            return;
        };
        let subs: Vec<String> = p.subs.keys().cloned().collect();
        let peer_id = p.subscriber;
        for t in &subs {
            self.choose_layer(pid, t);
        }
        let Some(p) = self.reg.parts.get_mut(&pid) else {
            return;
        };
        p.egress_applied = p.egress_estimate;
        let mut desired = 0u64;
        for s in p.subs.values().filter(|s| !s.disabled) {
            let Some(t) = self.reg.tracks.get(&s.track) else {
                continue;
            };
            desired += match (t.kind, s.wanted) {
                (MediaKind::Audio, _) => room::AUDIO_BUDGET,
                (MediaKind::Video, Some(r)) => t.layer_bitrate(&r),
                (MediaKind::Video, None) => room::default_layer_bitrate("f"),
            };
        }
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            peer.rtc.bwe().set_bitrate(
                str0m::bwe::Bitrate::bps(0),
                // Headroom: probing stops near the desired rate, and the layers must fit below.
                str0m::bwe::Bitrate::bps((desired + desired / 2).max(300_000)),
            );
            self.peers.mark(peer_id);
        }
    }

    /// The active speakers of each room, for its members (to send them).
    pub(super) fn speakers(&mut self, now: Instant) -> Vec<(Pid, Resp)> {
        let mut messages = vec![];
        let mut by_room: HashMap<String, Vec<lk::SpeakerInfo>> = HashMap::new();
        for p in self.reg.parts.values_mut() {
            let recent = p
                .last_audio
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(500));
            if !recent {
                p.audio_level = 0.0;
            }
            if p.audio_level > SPEAKER_THRESHOLD {
                by_room
                    .entry(p.room.clone())
                    .or_default()
                    .push(lk::SpeakerInfo {
                        sid: p.sid.clone(),
                        level: p.audio_level.min(1.0),
                        active: true,
                    });
            }
        }
        for (room, mut speakers) in by_room {
            speakers.sort_by(|a, b| b.level.total_cmp(&a.level));
            let msg = Resp::SpeakersChanged(lk::SpeakersChanged { speakers });
            for pid in self.reg.members(&room) {
                messages.push((pid, msg.clone()));
            }
        }
        messages
    }
}
