//! v1 (single PeerConnection): the client offers receive-only sections for the tracks it is to
//! get; these functions ask for them, keep the free ones, and assign subscriptions to them.

use super::*;

impl Sfu {
    /// v1: (mid, stream id, track sid) of every section that carries a subscribed track.
    pub(super) fn v1_msids(&self, pid: Pid) -> Vec<(String, String, String)> {
        let Some(p) = self.reg.parts.get(&pid) else {
            return vec![];
        };
        p.subs
            .values()
            .filter_map(|s| {
                let mid = s.mid?;
                let t = self.reg.tracks.get(&s.track)?;
                let owner = self.reg.parts.get(&t.owner)?;
                Some((
                    mid.to_string(),
                    format!("{}|{}", owner.sid, t.sid),
                    t.sid.clone(),
                ))
            })
            .collect()
    }

    /// v1: asks the client for the receive-only sections still missing.
    pub(super) fn request_sections(&mut self, pid: Pid, force: bool) {
        let Some(p) = self.reg.parts.get(&pid) else {
            return;
        };
        if p.mode != Mode::V1 {
            return;
        }
        let (mut audio, mut video) = (0u32, 0u32);
        for s in p.subs.values().filter(|s| s.mid.is_none()) {
            match self.reg.tracks.get(&s.track).map(|t| t.kind) {
                Some(MediaKind::Audio) => audio += 1,
                Some(MediaKind::Video) => video += 1,
                None => {}
            }
        }
        let asked = self.requested_sections.entry(pid).or_default();
        let need_audio = audio.saturating_sub(asked.0);
        let need_video = video.saturating_sub(asked.1);
        if need_audio == 0 && need_video == 0 && !force {
            return;
        }
        asked.0 += need_audio;
        asked.1 += need_video;
        debug!(need_audio, need_video, "asking for receive-only sections");
        self.signal(
            pid,
            Resp::MediaSectionsRequirement(lk::MediaSectionsRequirement {
                num_audios: need_audio,
                num_videos: need_video,
            }),
        );
    }

    /// v1: a receive-only section the client offered; free unless known already.
    pub(super) fn add_free_section(&mut self, pid: Pid, mid: Mid, kind: MediaKind) {
        let Some(p) = self.reg.parts.get(&pid) else {
            return;
        };
        let free = self.free_sections.entry(pid).or_default();
        if p.subs.values().any(|s| s.mid == Some(mid)) || free.iter().any(|(m, _)| *m == mid) {
            return;
        }
        free.push((mid, kind));
        if let Some(req) = self.requested_sections.get_mut(&pid) {
            match kind {
                MediaKind::Audio => req.0 = req.0.saturating_sub(1),
                MediaKind::Video => req.1 = req.1.saturating_sub(1),
            }
        }
    }

    /// v1: puts subscriptions without a section into free sections of the right kind.
    pub(super) fn assign_sections(&mut self, pid: Pid) {
        let Some(p) = self.reg.parts.get_mut(&pid) else {
            return;
        };
        let Some(free) = self.free_sections.get_mut(&pid) else {
            return;
        };
        for s in p.subs.values_mut().filter(|s| s.mid.is_none()) {
            let Some(kind) = self.reg.tracks.get(&s.track).map(|t| t.kind) else {
                continue;
            };
            if let Some(i) = free.iter().position(|(_, k)| *k == kind) {
                let (mid, _) = free.remove(i);
                s.mid = Some(mid);
                s.open = true;
                s.needs_keyframe = true;
            }
        }
    }
}
