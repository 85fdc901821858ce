//! The media path: forwarding frames to subscribers, simulcast layer choice (wanted, fitting
//! the bandwidth estimate, flowing), keyframe requests, active speakers.

use str0m::format::Codec;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};

use super::room::PubTrack;
use super::*;

/// How far the output timestamp moves at a simulcast layer switch (one frame at 30 fps, 90 kHz).
const SWITCH_TS_STEP: u32 = 3000;

/// Keyframe requests collected while forwarding one packet (one per layer at most; no heap).
#[derive(Default)]
struct Wanted {
    rids: [Option<Rid>; 4],
    len: usize,
}

impl Wanted {
    fn push(&mut self, rid: Option<Rid>) {
        let known = &self.rids[..self.len];
        if !known.contains(&rid) && self.len < self.rids.len() {
            self.rids[self.len] = rid;
            self.len += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = Option<Rid>> + '_ {
        self.rids[..self.len].iter().copied()
    }
}

impl Sfu {
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
            .parts
            .get(&pid)
            .and_then(|p| self.rooms.get_mut(&p.room))
        {
            Some(r) => std::mem::take(&mut r.participants),
            None => return,
        };
        self.forward_packet(now, pid, peer_id, mid, rid, &members, pkt);
        if let Some(r) = self
            .parts
            .get(&pid)
            .and_then(|p| self.rooms.get_mut(&p.room))
        {
            r.participants = members;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_packet(
        &mut self,
        now: Instant,
        pid: Pid,
        peer_id: PeerId,
        mid: Mid,
        rid: Option<Rid>,
        members: &[Pid],
        pkt: RtpPacket,
    ) {
        // Is this packet's delay through confab measured (delay.rs)? Only when its arrival
        // is known.
        let probe_at = match self.arrival {
            Some(at) if self.probe.sample() => Some(at),
            _ => None,
        };
        let Sfu {
            parts,
            tracks,
            peers,
            dirty,
            probe,
            ..
        } = self;
        let Some(part) = parts.get_mut(&pid) else {
            return;
        };
        let Some(t) = part
            .tracks
            .iter()
            .find(|t| tracks.get(*t).is_some_and(|t| t.mid == Some(mid)))
            .and_then(|sid| tracks.get_mut(sid))
        else {
            return;
        };
        let header = &pkt.header;
        let pt = header.payload_type;
        let params = match t.params {
            Some(p) if p.pt() == pt => p,
            _ => {
                let Some(p) = peers
                    .get(&peer_id)
                    .and_then(|p| p.rtc.codec_config().find(|p| p.pt() == pt).copied())
                else {
                    return;
                };
                if t.info.mime_type.is_empty() {
                    t.info.mime_type = format!("{}/{}", t.kind, p.spec().codec);
                }
                t.params = Some(p);
                p
            }
        };
        let video = t.kind == MediaKind::Video;
        if !video {
            if let Some(level) = header.ext_vals.audio_level {
                let linear = 10f32.powf(level as f32 / 20.0);
                part.audio_level = part.audio_level * 0.7 + linear * 0.3;
                part.last_audio = Some(now);
            }
        }
        if let Some(rid) = rid {
            t.layer_seen.insert(rid, now);
        }
        let t: &PubTrack = t;
        let keyframe = video && rtp::starts_keyframe(params.spec().codec, &pkt.payload);
        // VP8: the payload descriptor, for PictureID continuity across layer switches.
        let vp8 = match params.spec().codec {
            Codec::Vp8 if rtp::vp8_has_long_picture_id(&pkt.payload) => {
                Vp8Descriptor::parse(&pkt.payload).ok()
            }
            _ => None,
        };
        let seq = *pkt.seq_no;
        let ts = header.timestamp;
        // What the subscriber needs of the publisher's header extensions; str0m adds its own
        // (mid, rid, transport-wide sequence numbers, absolute send time).
        let ext = ExtensionValues {
            audio_level: header.ext_vals.audio_level,
            voice_activity: header.ext_vals.voice_activity,
            video_orientation: header.ext_vals.video_orientation,
            video_content_type: header.ext_vals.video_content_type,
            ..Default::default()
        };
        let mut want_keyframe = Wanted::default();
        // The layer to forward for a wanted one, for the last wanted layer asked (subscribers
        // mostly want the same).
        let mut flowing: Option<(Option<Rid>, Option<Rid>)> = None;
        for &other in members {
            if other == pid {
                continue;
            }
            let Some(p) = parts.get_mut(&other) else {
                continue;
            };
            let sub_peer = p.subscriber;
            let Some(s) = p.subs.get_mut(&t.sid) else {
                continue;
            };
            let (Some(out_mid), true, false) = (s.mid, s.open, s.disabled) else {
                continue;
            };
            let Some(peer) = peers.get_mut(&sub_peer) else {
                continue;
            };
            if !peer.connected {
                // Not before the subscriber's connection is up: str0m would queue the packets
                // and send them, stale, once DTLS completes (a quarter of a second of audio
                // at once into the browser's jitter buffer).
                continue;
            }
            if !s.rewrite.started() {
                // A section used before: its stream goes on where the last track left it.
                if let Some(last) = peer.last_out.get(&out_mid) {
                    s.rewrite.continue_after(*last);
                }
            }
            // Simulcast: forward one layer; switch to the wanted layer (or the best one flowing
            // below it) at the first packet of its keyframe.
            if rid.is_some() {
                let target = match flowing {
                    Some((wanted, layer)) if wanted == s.target => layer,
                    _ => {
                        let layer = t.flowing_layer(s.target, now);
                        flowing = Some((s.target, layer));
                        layer
                    }
                };
                if target != s.current && rid == target {
                    if keyframe {
                        debug!(track = %t.sid, from = ?s.current, to = ?target, "layer switch");
                        s.current = target;
                        s.rewrite.start(seq, ts, SWITCH_TS_STEP);
                        s.needs_keyframe = false;
                        if let Some(d) = &vp8 {
                            s.vp8.start(d);
                        }
                    } else {
                        want_keyframe.push(target);
                    }
                }
                if rid != s.current {
                    continue;
                }
            } else if s.needs_keyframe && video {
                if keyframe {
                    s.needs_keyframe = false;
                    s.rewrite.start(seq, ts, SWITCH_TS_STEP);
                    if let Some(d) = &vp8 {
                        s.vp8.start(d);
                    }
                } else {
                    // A decoder cannot start on a delta frame: hold back until a keyframe.
                    want_keyframe.push(None);
                    continue;
                }
            } else if !s.rewrite.started() {
                s.rewrite.start(seq, ts, SWITCH_TS_STEP);
                if let Some(d) = &vp8 {
                    s.vp8.start(d);
                }
            }
            let Some((out_seq, out_ts)) = s.rewrite.map(seq, ts) else {
                continue;
            };
            let vp8_patch = vp8.as_ref().and_then(|d| s.vp8.patch(d));
            // The subscriber's PT for the same codec (PTs may differ per peer).
            let out_pt = match s.pt_map {
                Some((from, to)) if from == pt => to,
                _ => {
                    let Some(to) = peer.rtc.codec_config().match_params(params).map(|p| p.pt())
                    else {
                        continue;
                    };
                    s.pt_map = Some((pt, to));
                    to
                }
            };
            let mut api = peer.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out_mid, None) else {
                continue;
            };
            if video && !s.rtx_sized {
                s.rtx_sized = true;
                tx.set_rtx_cache(super::RTX_PACKETS, super::RTX_AGE, super::RTX_RATIO_CAP);
            }
            let mut w = RtpWrite::new(
                out_pt,
                out_seq.into(),
                out_ts,
                pkt.timestamp,
                pkt.payload.clone(),
            )
            .marker(header.marker)
            .ext_vals(ext.clone())
            .nackable(video);
            if let Some(patch) = vp8_patch {
                w = w.vp8_patch(patch);
            }
            if let Some(arrived) = probe_at {
                let audio = !video;
                probe.expect(
                    now,
                    *tx.ssrc(),
                    out_seq as u16,
                    delay::Probe { arrived, audio },
                );
            }
            tx.write_rtp(w);
            if !dirty.contains(&sub_peer) {
                dirty.push(sub_peer);
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
        let Some(p) = self.parts.get(&pid) else {
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
        let Some(t) = self.tracks.get_mut(track_sid) else {
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
        let Some(owner) = self.parts.get(&t.owner) else {
            return;
        };
        let peer_id = owner.publisher;
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            match peer.rtc.direct_api().stream_rx_by_mid(mid, rid) {
                Some(rx) => rx.request_keyframe(KeyframeRequestKind::Pli),
                None => debug!(%mid, ?rid, "keyframe request not sent: no stream yet"),
            }
            self.dirty.push(peer_id);
        }
    }

    /// Picks the simulcast layer a subscriber should get: the smallest layer at least as wide
    /// as it asked for (the best when it did not say), never above what it can take.
    pub(super) fn choose_layer(&mut self, pid: Pid, track_sid: &str) {
        let budget = self.video_budget(pid);
        let Some(t) = self.tracks.get(track_sid) else {
            return;
        };
        if !t.simulcast() {
            return;
        }
        let Some(s) = self
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
        let p = self.parts.get(&pid)?;
        let estimate = p.egress_estimate?;
        let (mut audio, mut video) = (0u64, 0u64);
        for s in p.subs.values().filter(|s| !s.disabled) {
            match self.tracks.get(&s.track).map(|t| t.kind) {
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
        let Some(p) = self.parts.get(&pid) else {
            return;
        };
        let subs: Vec<String> = p.subs.keys().cloned().collect();
        let peer_id = p.subscriber;
        for t in &subs {
            self.choose_layer(pid, t);
        }
        let Some(p) = self.parts.get_mut(&pid) else {
            return;
        };
        p.egress_applied = p.egress_estimate;
        let mut desired = 0u64;
        for s in p.subs.values().filter(|s| !s.disabled) {
            let Some(t) = self.tracks.get(&s.track) else {
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
            self.dirty.push(peer_id);
        }
    }

    pub(super) fn update_speakers(&mut self, now: Instant) {
        let mut by_room: HashMap<String, Vec<lk::SpeakerInfo>> = HashMap::new();
        for p in self.parts.values_mut() {
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
            for pid in self.room_members(&room) {
                self.signal(pid, msg.clone());
            }
        }
    }
}
