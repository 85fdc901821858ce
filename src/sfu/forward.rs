//! The media path: forwarding frames to subscribers, simulcast layer choice (wanted, fitting
//! the bandwidth estimate, flowing), keyframe requests, active speakers.

use super::*;

impl Sfu {
    pub(super) fn on_media_data(&mut self, now: Instant, peer_id: PeerId, d: MediaData) {
        let Some(pid) = self.peers.get(&peer_id).map(|p| p.owner) else {
            return;
        };
        // The room's member list is borrowed out of the room for the frame (not cloned per
        // frame) and put back afterwards; nothing below changes membership.
        let members = match self
            .parts
            .get(&pid)
            .and_then(|p| self.rooms.get_mut(&p.room))
        {
            Some(r) => std::mem::take(&mut r.participants),
            None => return,
        };
        self.forward_frame(now, pid, &members, d);
        if let Some(r) = self
            .parts
            .get(&pid)
            .and_then(|p| self.rooms.get_mut(&p.room))
        {
            r.participants = members;
        }
    }

    fn forward_frame(&mut self, now: Instant, pid: Pid, members: &[Pid], d: MediaData) {
        let Some(part) = self.parts.get(&pid) else {
            return;
        };
        let Some(track_sid) = part
            .tracks
            .iter()
            .find(|t| self.tracks.get(*t).is_some_and(|t| t.mid == Some(d.mid)))
            .cloned()
        else {
            return;
        };
        let kind = self.tracks.get(&track_sid).map(|t| t.kind);
        if kind == Some(MediaKind::Audio) {
            if let Some(level) = d.ext_vals.audio_level {
                let linear = 10f32.powf(level as f32 / 20.0);
                if let Some(p) = self.parts.get_mut(&pid) {
                    p.audio_level = p.audio_level * 0.7 + linear * 0.3;
                    p.last_audio = Some(now);
                }
            }
        }
        let Some(t) = self.tracks.get_mut(&track_sid) else {
            return;
        };
        if t.info.mime_type.is_empty() {
            t.info.mime_type = format!("{}/{}", t.kind, d.params.spec().codec);
        }
        if let Some(rid) = d.rid {
            t.layer_seen.insert(rid, now);
        }
        let Some(t) = self.tracks.get(&track_sid) else {
            return;
        };
        let keyframe = d.is_keyframe();
        let mut want_keyframe = vec![];
        for &other in members {
            if other == pid {
                continue;
            }
            let Some(p) = self.parts.get_mut(&other) else {
                continue;
            };
            let sub_peer = p.subscriber;
            let Some(s) = p.subs.get_mut(&track_sid) else {
                continue;
            };
            let (Some(mid), true, false) = (s.mid, s.open, s.disabled) else {
                continue;
            };
            // Simulcast: forward one layer; switch to the wanted layer (or the best one flowing
            // below it) on its keyframe.
            if d.rid.is_some() {
                let target = t.flowing_layer(s.target, now);
                if target != s.current && d.rid == target {
                    if keyframe {
                        let last = s.last_out_time;
                        debug!(track = %track_sid, from = ?s.current, to = ?target, "layer switch");
                        s.current = target;
                        s.time_offset = match last {
                            Some((t, _)) => t + 3000 - d.time.numer() as i64,
                            None => 0,
                        };
                        s.needs_keyframe = false;
                    } else {
                        want_keyframe.push(target);
                    }
                }
                if d.rid != s.current {
                    continue;
                }
            } else if s.needs_keyframe && kind == Some(MediaKind::Video) {
                if keyframe {
                    s.needs_keyframe = false;
                } else {
                    // A decoder cannot start on a delta frame: hold back until a keyframe.
                    want_keyframe.push(None);
                    continue;
                }
            }
            let out_time = (d.time.numer() as i64).wrapping_add(s.time_offset);
            s.last_out_time = Some((out_time, d.time.denom() as u64));
            let time = str0m::media::MediaTime::new(out_time as u64, d.time.frequency());
            let Some(peer) = self.peers.get_mut(&sub_peer) else {
                continue;
            };
            let Some(w) = peer.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = w.match_params(d.params) else {
                continue;
            };
            if let Err(e) = w.write(pt, d.network_time, time, d.data.clone()) {
                debug!("forwarding failed: {e}");
            }
            self.dirty.push(sub_peer);
        }
        if !d.contiguous {
            want_keyframe.push(d.rid);
        }
        want_keyframe.sort_by_key(|r| r.map(|r| r.to_string()));
        want_keyframe.dedup();
        for rid in want_keyframe {
            self.request_keyframe(now, &track_sid, rid);
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
            if let Some(mut w) = peer.rtc.writer(mid) {
                if let Err(e) = w.request_keyframe(rid, KeyframeRequestKind::Pli) {
                    debug!("keyframe request not sent: {e}");
                }
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
